package endwell

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/go-retryablehttp"
)

// RetryPolicy returns a [retryablehttp.CheckRetry] that retries only what is safe to send
// again, and leaves the rest of the decision to next. Nil next means
// [retryablehttp.DefaultRetryPolicy]. Use it with a client whose transport is a [Transport]:
//
//	rc := retryablehttp.NewClient()
//	rc.HTTPClient = &http.Client{Transport: t}
//	rc.CheckRetry = endwell.RetryPolicy(retryablehttp.DefaultRetryPolicy)
//
// The policy decides in this order:
//
//   - The request's context is done: no retry, and the context's error is returned, as
//     DefaultRetryPolicy does.
//   - The error is one that a new attempt would meet again: a [*RequestError] (endwell
//     refused the request), [ErrClosed] or [ErrShutdown] (the transport is ending): no retry.
//   - [NotSent] reports the error (a failed dial, proxy CONNECT or TLS handshake, a
//     refused connection, a stale keep-alive connection found dead before any byte of the
//     request was written): the server never saw the request, so it is safe to send again
//     whatever its method; next decides. This holds for a dial that timed out, too.
//   - The error matches [context.Canceled] or [context.DeadlineExceeded] (the
//     http.Client's Timeout, a context of the caller's own): no retry.
//   - Otherwise the server may have processed the request: a response arrived, or the
//     connection failed after the request was written (for example [ErrServerClosedConn]).
//     The request is sent again only when it is idempotent, and then next decides.
//
// A request is idempotent when its method is GET, HEAD, OPTIONS, TRACE, PUT or DELETE, when
// it carries an Idempotency-Key (or X-Idempotency-Key) header, or when its context was
// marked with [WithIdempotent]. CheckRetry does not receive the request, so the policy finds
// it where it can: with a response, it is the first request of [http.Response.Request]'s
// redirect chain, the one retryablehttp sends again; with an error, the policy knows the
// method from the [*url.Error] that [http.Client] returns (whose Op is the first request's
// method), but not the headers: mark the context with [WithIdempotent] for a POST that
// carries an Idempotency-Key and should be retried after an error too. A request the
// policy cannot identify counts as not idempotent.
//
// After a redirect, the request that failed is not the one retryablehttp sends again, and
// the error says nothing of the redirect: a POST answered 303 whose follow-up GET fails with
// ErrNotSent is retried, though the POST was processed. Where that matters, do not let the
// http.Client follow such redirects (a CheckRedirect that returns [http.ErrUseLastResponse]).
//
// The policy never matches error strings: it relies on endwell's typed errors, found with
// [errors.Is] through the wrapping of [http.Client] and retryablehttp.
func RetryPolicy(next retryablehttp.CheckRetry) retryablehttp.CheckRetry {
	if next == nil {
		next = retryablehttp.DefaultRetryPolicy
	}
	return func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			var re *RequestError
			if errors.As(err, &re) || errors.Is(err, ErrClosed) || errors.Is(err, ErrShutdown) {
				// Sending it again would fail the same way.
				return false, nil
			}
			if NotSent(err) {
				return next(ctx, resp, err)
			}
			// A response header timeout matches DeadlineExceeded too (as net/http's), but
			// it is the transport's: an idempotent request may go again.
			if !errors.Is(err, ErrResponseHeaderTimeout) &&
				(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				return false, nil
			}
		}
		if !retryIdempotent(ctx, resp, err) {
			return false, nil
		}
		return next(ctx, resp, err)
	}
}

type idempotentKey struct{}

// WithIdempotent returns a copy of ctx that marks the requests made with it as idempotent
// for [RetryPolicy]: safe to send again even if the server may have processed them, as
// with an Idempotency-Key header that the server honours.
func WithIdempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

// retryIdempotent reports whether the request behind resp or err may be sent again though
// the server may have processed it.
func retryIdempotent(ctx context.Context, resp *http.Response, err error) bool {
	if marked, _ := ctx.Value(idempotentKey{}).(bool); marked {
		return true
	}
	if resp != nil && resp.Request != nil {
		req := resp.Request
		// http.Client links each redirected request to the response that caused it.
		for req.Response != nil && req.Response.Request != nil {
			req = req.Response.Request
		}
		if req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != "" {
			return true
		}
		return idempotentMethod(req.Method)
	}
	// http.Client's errors name the first request's method in Op, in its own case: "Get",
	// "Post", "Delete".
	var ue *url.Error
	if errors.As(err, &ue) && ue.Op != "" {
		return idempotentMethod(strings.ToUpper(ue.Op))
	}
	return false
}

// idempotentMethod reports whether m is idempotent by RFC 9110 (section 9.2.2). The
// transport's own silent retry is narrower (isIdempotent, as net/http's).
func idempotentMethod(m string) bool {
	switch m {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}
