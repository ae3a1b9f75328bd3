package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// fullEntry returns an entry with every field of reaper.Entry set to a
// value other than its zero, found by reflection, so that a field added
// to Entry and forgotten by the codec fails TestEntryEncodingRoundTrips.
func fullEntry(t *testing.T) *reaper.Entry {
	t.Helper()
	uid := uint32(4242)
	at := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	e := &reaper.Entry{Provider: "daytona", ID: "7f3c2a/odd id ü"}
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if !f.IsZero() {
			continue
		}
		switch f.Interface().(type) {
		case string:
			f.SetString("value of " + name)
		case bool:
			f.SetBool(true)
		case int:
			f.SetInt(7)
		case time.Time:
			f.Set(reflect.ValueOf(at.Add(time.Duration(i) * time.Minute)))
		case map[string]string:
			f.Set(reflect.ValueOf(map[string]string{"team": "ml", "": "empty key", "gpu": ""}))
		case *reaper.Resources:
			f.Set(reflect.ValueOf(&reaper.Resources{VCPU: 0.5, MemoryGiB: 1.25, DiskGiB: 10, GPU: "A100", GPUCount: 2}))
		case *uint32:
			f.Set(reflect.ValueOf(&uid))
		case reaper.State:
			f.Set(reflect.ValueOf(reaper.StateClosing))
		case reaper.Reason:
			f.Set(reflect.ValueOf(reaper.ReasonOrphanedLease))
		default:
			t.Fatalf("Entry.%s is a %s: teach fullEntry and the binary form (entry.go) about it", name, f.Type())
		}
	}
	return e
}

func TestEntryEncodingRoundTrips(t *testing.T) {
	uid := uint32(0)
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for name, e := range map[string]*reaper.Entry{
		"every field": fullEntry(t),
		"a registration": {Provider: "e2b", ID: "i1", Session: "s1", Labels: map[string]string{"task": "x"},
			RegisteredAt: at, ExpiresAt: at.Add(time.Hour), State: reaper.StateActive, Owner: &uid},
		"closed":                {Provider: "modal", ID: "sb-1", State: reaper.StateClosed, CloseReason: reaper.ReasonGone, ClosedAt: at, Seen: true},
		"released, before 1970": {Provider: "runloop", ID: "dbx", State: reaper.StateReleased, RegisteredAt: time.Unix(-5, 0).UTC()},
		"id with slashes":       {Provider: "e2b", ID: "a/b/c", State: reaper.StateActive},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := encodeEntry(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeEntryValue([]byte(e.Key()), v)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
			}
			js, _ := json.Marshal(e)
			if len(v) >= len(js) {
				t.Errorf("binary form is %d bytes, JSON %d", len(v), len(js))
			}
			// Every truncation is an error, never a panic or a wrong entry.
			for n := 0; n < len(v); n++ {
				if got, err := decodeEntryValue([]byte(e.Key()), v[:n]); err == nil {
					t.Errorf("truncated to %d of %d bytes decoded as %+v", n, len(v), got)
				}
			}
		})
	}
}

func TestEntryEncodingRefuses(t *testing.T) {
	ok := must(encodeEntry(&reaper.Entry{Provider: "e2b", ID: "x", State: reaper.StateActive}))
	later := append([]byte{entryFormat}, binary.AppendUvarint(nil, 1<<enState|1<<enFields)...)
	later = append(later, 1)
	for _, c := range []struct {
		name string
		key  string
		v    []byte
		want string
	}{
		{"empty", "e2b/x", nil, "malformed entry"},
		{"unknown format", "e2b/x", []byte{0x02, 0}, "malformed entry"},
		{"trailing bytes", "e2b/x", append(append([]byte{}, ok...), 0), "left over"},
		{"a field of a newer reaperd", "e2b/x", later, "newer reaperd"},
		{"unknown state code", "e2b/x", []byte{entryFormat, 1 << enState, 9}, "malformed entry"},
		{"key without provider", "x", ok, "names no provider"},
		{"JSON naming another key", "e2b/y", []byte(`{"provider":"e2b","id":"x","state":"active"}`), `the record names "e2b/x"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeEntryValue([]byte(c.key), c.v)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := encodeEntry(&reaper.Entry{Provider: "e2b", ID: "x", State: "lost"}); err == nil {
		t.Error("an entry in an unknown state was encoded")
	}
	var ce *reaper.CorruptError
	if _, err := decodeEntry([]byte("e2b/x"), []byte("garbage")); !errors.As(err, &ce) {
		t.Errorf("decodeEntry error = %v, want a *reaper.CorruptError", err)
	}
}

func TestEntryDecodingReadsJSONEntries(t *testing.T) {
	e := fullEntry(t)
	js, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEntryValue([]byte(e.Key()), js)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("decode JSON = %+v, %v; want %+v", got, err, e)
	}
}

// BenchmarkEntryCodec compares the binary form of a registration's entry
// with its JSON form: bytes stored, and the time to decode and encode.
func BenchmarkEntryCodec(b *testing.B) {
	uid := uint32(1000)
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	e := &reaper.Entry{Provider: "e2b", ID: "3f1c9e52-8d4b-4a7e-9c1d-5b2e7f8a9d10", Session: "agent-r1-01",
		Labels: map[string]string{"task": "bench"}, RegisteredAt: at, ExpiresAt: at.Add(30 * time.Minute),
		State: reaper.StateActive, Owner: &uid}
	key := []byte(e.Key())
	js, _ := json.Marshal(e)
	bin := must(encodeEntry(e))
	for _, f := range []struct {
		name string
		v    []byte
		enc  func() error
	}{
		{"json", js, func() error { _, err := json.Marshal(e); return err }},
		{"binary", bin, func() error { _, err := encodeEntry(e); return err }},
	} {
		b.Run("form="+f.name+"/op=decode", func(b *testing.B) {
			for b.Loop() {
				if _, err := decodeEntryValue(key, f.v); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(f.v)), "bytes/entry")
		})
		b.Run("form="+f.name+"/op=encode", func(b *testing.B) {
			for b.Loop() {
				if err := f.enc(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSessionEncodingRoundTrips(t *testing.T) {
	// Every field set, found by reflection, so that a field added to
	// Session and forgotten by the codec fails here.
	uid := uint32(7)
	at := time.Date(2026, 11, 30, 12, 0, 0, 5, time.UTC)
	full := &reaper.Session{ID: "agent ü/1"}
	v := reflect.ValueOf(full).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if !f.IsZero() {
			continue
		}
		switch f.Interface().(type) {
		case string:
			f.SetString("value of " + name)
		case int:
			f.SetInt(4242)
		case uint64:
			f.SetUint(1 << 40)
		case reaper.Duration:
			f.SetInt(int64(time.Duration(i) * time.Second))
		case time.Time:
			f.Set(reflect.ValueOf(at.Add(time.Duration(i) * time.Minute)))
		case reaper.Reason:
			f.Set(reflect.ValueOf(reaper.ReasonOrphanedProcess))
		case *uint32:
			f.Set(reflect.ValueOf(&uid))
		default:
			t.Fatalf("Session.%s is a %s: teach this test and the binary form (entry.go) about it", name, f.Type())
		}
	}
	for name, s := range map[string]*reaper.Session{
		"every field": full,
		"new":         {ID: "s1", StartedAt: at, LastHeartbeat: at},
		"bare":        {ID: "s2"},
	} {
		t.Run(name, func(t *testing.T) {
			b := encodeSession(s)
			got, err := decodeSessionValue([]byte(s.ID), b)
			if err != nil || !reflect.DeepEqual(got, s) {
				t.Fatalf("round trip = %+v, %v; want %+v", got, err, s)
			}
			for n := 0; n < len(b); n++ {
				if got, err := decodeSessionValue([]byte(s.ID), b[:n]); err == nil {
					t.Errorf("truncated to %d of %d bytes decoded as %+v", n, len(b), got)
				}
			}
			js, _ := json.Marshal(s)
			if got, err := decodeSessionValue([]byte(s.ID), js); err != nil || !reflect.DeepEqual(got, s) {
				t.Errorf("JSON form = %+v, %v", got, err)
			}
		})
	}
	if _, err := decodeSessionValue([]byte("other"), must(json.Marshal(full))); err == nil || !strings.Contains(err.Error(), "the record names") {
		t.Errorf("a JSON session under another key: %v", err)
	}
}
