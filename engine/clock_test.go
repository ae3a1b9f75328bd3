package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestWithTimeoutOnAFakeClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ctx, cancel := withTimeout(context.Background(), clock, time.Minute)
	defer cancel()
	if err := ctx.Err(); err != nil {
		t.Fatalf("Err before the timeout = %v, want nil (and no blocking)", err)
	}
	clock.Advance(time.Minute)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not done after the fake clock passed the timeout")
	}
	if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err after the timeout = %v, want DeadlineExceeded", err)
	}

	ctx2, cancel2 := withTimeout(context.Background(), clock, time.Minute)
	cancel2()
	if err := ctx2.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after cancel = %v, want Canceled", err)
	}
}
