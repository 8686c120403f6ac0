package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestSoakBrief runs the soak for two seconds: its own leak check must pass.
func TestSoakBrief(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 2 seconds (skipped in -short)")
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"-d", "2s", "-every", "500ms", "-shutdown-every", "700ms", "-workers", "8"}, &out)
	t.Logf("soak output:\n%s", out.String())
	if err != nil {
		t.Fatalf("soak: %v", err)
	}
	if !strings.Contains(out.String(), "end:") {
		t.Errorf("soak printed no end line")
	}
}
