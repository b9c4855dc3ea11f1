package knfunc_test

import (
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

func knfuncClient(url string) (saga.Store, error) {
	rdb, err := redisstore.NewClient(url)
	if err != nil {
		return nil, err
	}
	return redisstore.New(rdb, redisstore.Options{})
}
