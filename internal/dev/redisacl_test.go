package dev

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ksaga/ksaga/internal/testredis"
)

// TestSaveACL: with an ACL file, the users ksaga dev creates are saved to
// it and come back with a restart of redis-server (no window in which the
// functions are refused); without one, saving does nothing and users live
// in memory only.
func TestSaveACL(t *testing.T) {
	ctx := context.Background()
	aclfile := filepath.Join(t.TempDir(), "users.acl")
	if err := os.WriteFile(aclfile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		opts     []testredis.Option
		survives bool
	}{
		{"with an ACL file", []testredis.Option{{"--aclfile", aclfile}}, true},
		{"without", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testredis.Start(t, tc.opts...)
			rdb := srv.Client(t)
			if err := rdb.Do(ctx, "ACL", "SETUSER", "fn-payment", "on", ">pw", "~payment:*", "+get").Err(); err != nil {
				t.Fatal(err)
			}
			if err := saveACL(ctx, rdb); err != nil {
				t.Fatal(err)
			}
			srv.Stop()
			srv.Restart()
			err := srv.Client(t).Do(ctx, "ACL", "GETUSER", "fn-payment").Err()
			if got := err == nil; got != tc.survives {
				t.Fatalf("after a restart, the user is there: %v (%v), want %v", got, err, tc.survives)
			}
		})
	}
}
