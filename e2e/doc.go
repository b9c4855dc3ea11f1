// Package e2e tests the reference order saga end to end: `ksaga dev` as a
// real process (the repo's own brokers/, triggers/ and manifests/), every
// function as its own process, a real redis-server, real HTTP and real
// CloudEvents. Each scenario runs in choreography and in orchestration mode.
package e2e
