package ledger

import (
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

func TestEventEncodingRoundTrips(t *testing.T) {
	uid := uint32(1000)
	at := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	for _, ev := range []reaper.AuditEvent{
		{Time: at, Kind: reaper.EventSessionEnded, Session: "s1"},
		{Time: at, Kind: reaper.EventRegistered, Key: "daytona/abc", Session: "s1", Actor: &uid, Detail: "keep",
			Labels: map[string]string{"team": "ml", "gpu": "A100"}, Keep: true, Attached: true,
			Resources: &reaper.Resources{VCPU: 0.5, MemoryGiB: 1.25, DiskGiB: 10, GPU: "A100", GPUCount: 2}},
		{Time: at, Kind: reaper.EventRegistered, Key: "e2b/x", ActorToken: "ci", Actor: new(uint32)},
		{Time: at, Kind: reaper.EventCloseStarted, Key: "modal/sb-1", Reason: reaper.ReasonOrphanedLease, DueAt: at.Add(-time.Second)},
		{Time: at, Kind: reaper.EventCloseFailed, Key: "e2b/x", Reason: reaper.ReasonExpired, ErrorClass: "invalid", Error: "bad id ü", Stuck: true},
		{Time: at, Kind: reaper.EventStateChanged, Key: "runloop/dbx", RunState: reaper.RunStateStopped},
		{Time: at, Kind: reaper.EventResized, Key: "runloop/dbx", Resources: &reaper.Resources{}},
		{Time: time.Unix(0, 0).UTC(), Kind: "a-kind-from-later"},
	} {
		v := encodeEvent(&ev)
		var got reaper.AuditEvent
		if err := decodeEvent(v, &got); err != nil {
			t.Fatalf("decode %+v: %v", ev, err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, ev)
		}
		if k := eventKey(v); k != ev.Key {
			t.Errorf("eventKey = %q, want %q", k, ev.Key)
		}
		// Every truncation is an error, never a panic or a wrong event.
		for n := 1; n < len(v); n++ {
			var e reaper.AuditEvent
			if err := decodeEvent(v[:n], &e); err == nil && reflect.DeepEqual(e, ev) {
				t.Errorf("truncated to %d of %d bytes decoded as the whole event", n, len(v))
			}
		}
	}
}

func TestEventDecodingReadsJSONEvents(t *testing.T) {
	ev := reaper.AuditEvent{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Kind: reaper.EventClosed, Key: "e2b/x", Reason: reaper.ReasonExpired}
	v, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var got reaper.AuditEvent
	if err := decodeEvent(v, &got); err != nil || !reflect.DeepEqual(got, ev) {
		t.Fatalf("decode JSON = %+v, %v; want %+v", got, err, ev)
	}
	if k := eventKey(v); k != "e2b/x" {
		t.Errorf("eventKey of JSON = %q", k)
	}
}

// TestEventDecodingSkipsFieldsFromLater: a field a later reaperd adds,
// after every known one, is ignored, not an error.
func TestEventDecodingSkipsFieldsFromLater(t *testing.T) {
	ev := reaper.AuditEvent{Time: time.Unix(5, 0).UTC(), Kind: reaper.EventClosed, Key: "e2b/x", Stuck: true}
	v := encodeEvent(&ev)
	mask, n := binary.Uvarint(v[1:])
	later := append([]byte{eventFormat}, binary.AppendUvarint(nil, mask|1<<evFields)...)
	later = append(later, v[1+n:]...)
	later = append(later, 0x03, 'n', 'e', 'w')
	var got reaper.AuditEvent
	if err := decodeEvent(later, &got); err != nil || !reflect.DeepEqual(got, ev) {
		t.Fatalf("decode with a later field = %+v, %v; want %+v", got, err, ev)
	}
}

func TestEventDecodingRefusesGarbage(t *testing.T) {
	for _, v := range [][]byte{nil, {0x02, 0x01}, {eventFormat}, {eventFormat, 0xff}, []byte("{not json")} {
		var ev reaper.AuditEvent
		if err := decodeEvent(v, &ev); err == nil {
			t.Errorf("decode %q = nil error", v)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	uid := uint32(1000)
	ev := reaper.AuditEvent{Time: time.Now(), Kind: reaper.EventRegistered, Key: "daytona/0123456789abcdef0123", Session: "sess-123456",
		Actor: &uid, Detail: "expires 2026-12-01T00:00:00Z", Labels: map[string]string{"team": "a"}, Resources: &reaper.Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 10}}
	for _, form := range []struct {
		name string
		v    []byte
	}{{"binary", encodeEvent(&ev)}, {"json", must(json.Marshal(ev))}} {
		b.Run(form.name, func(b *testing.B) {
			b.ReportMetric(float64(len(form.v)), "bytes/event")
			var got reaper.AuditEvent
			for b.Loop() {
				if err := decodeEvent(form.v, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func must(v []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return v
}

// TestLeanDecodingDropsDetailAndError: the scan a report reads leaves out
// the two free-text fields, in either form, and keeps everything else.
func TestLeanDecodingDropsDetailAndError(t *testing.T) {
	ev := reaper.AuditEvent{Time: time.Unix(7, 0).UTC(), Kind: reaper.EventCloseFailed, Key: "e2b/x", Session: "s",
		Reason: reaper.ReasonExpired, ErrorClass: "invalid", Error: "bad id", Detail: "attempt 3", Stuck: true,
		Labels: map[string]string{"a": "b"}}
	want := ev
	want.Error, want.Detail = "", ""
	for name, v := range map[string][]byte{"binary": encodeEvent(&ev), "json": must(json.Marshal(ev))} {
		var got reaper.AuditEvent
		if err := decodeEventLean(v, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: lean decode = %+v, %v; want %+v", name, got, err, want)
		}
	}
}
