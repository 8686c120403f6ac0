// Package testpeer is what endwell's tests need of the peers they talk to: a self-signed
// loopback certificate ([TestCert]), child processes that play servers we did not write
// ([Start]), and in-process loopback servers ([Serve]).
//
// It imports nothing of endwell, and not the testing package either (cmd/endwell's
// embedded servers use its certificate): its helpers take a [TB], which *testing.T and
// *testing.B satisfy.
package testpeer

// TB is the part of [testing.TB] the helpers use.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	Failed() bool
}
