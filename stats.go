package endwell

import (
	"context"

	"github.com/endwell/endwell/shutdown"
)

// teardownDone is called once each connection's socket is closed, with its record.
func (t *Transport) teardownDone(ctx context.Context, r *shutdown.Record) {
	if h := t.onTeardown; h != nil {
		h(r)
	}
}
