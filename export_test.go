package endwell

// SetOnRelease makes f see the release of every HTTP/1.1 exchange of t, with nil when the
// connection went back to the pool and why not otherwise (httptrace's PutIdleConn, as in
// net/http, sees only the former). Nil f removes the hook.
func SetOnRelease(t *Transport, f func(err error)) {
	if f == nil {
		t.onRelease.Store(nil)
		return
	}
	t.onRelease.Store(&f)
}
