//go:build tools

// This file pins modules that later issues use, so that go.mod lists them
// before the code that imports them lands.
package endwell

import (
	_ "github.com/hashicorp/go-retryablehttp"
	_ "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	_ "go.opentelemetry.io/otel"
	_ "go.opentelemetry.io/otel/sdk/metric"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.uber.org/goleak"
	_ "golang.org/x/net/http2"
)
