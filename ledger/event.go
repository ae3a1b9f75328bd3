package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Audit events are stored in a compact binary form, which a cost report
// over a million events decodes in a fraction of the time JSON takes:
//
//	0x01                     format version
//	uvarint                  bitmask of the fields present, bit i = field i
//	fields present, in order (strings and lists are uvarint-length-prefixed):
//	 0 time (varint Unix ns)    1 kind        2 key        3 session
//	 4 actor (uvarint)          5 actor token 6 reason     7 error class
//	 8 error                    9 detail     10 labels (uvarint count, then key, value; sorted)
//	11 keep (no bytes)         12 attached (no bytes)
//	13 resources (3 little-endian float64: vcpu, memory, disk; gpu; uvarint gpu count)
//	14 run state               15 due at (varint Unix ns)  16 stuck (no bytes)
//
// New fields take the next bits; a reader stops at the first bit it does
// not know, so an older reaperd reads what it knows of a newer event.
// Events written before this form (JSON, which starts with '{') are read
// as they are.
const eventFormat = 0x01

const (
	evTime = iota
	evKind
	evKey
	evSession
	evActor
	evActorToken
	evReason
	evErrorClass
	evError
	evDetail
	evLabels
	evKeep
	evAttached
	evResources
	evRunState
	evDueAt
	evStuck
	evFields // the number of fields this package knows
)

var errEventFormat = errors.New("malformed audit event")

// encodeEvent returns ev in the binary form.
func encodeEvent(ev *reaper.AuditEvent) []byte {
	var mask uint64
	set := func(bit int, ok bool) {
		if ok {
			mask |= 1 << bit
		}
	}
	set(evTime, true)
	set(evKind, ev.Kind != "")
	set(evKey, ev.Key != "")
	set(evSession, ev.Session != "")
	set(evActor, ev.Actor != nil)
	set(evActorToken, ev.ActorToken != "")
	set(evReason, ev.Reason != "")
	set(evErrorClass, ev.ErrorClass != "")
	set(evError, ev.Error != "")
	set(evDetail, ev.Detail != "")
	set(evLabels, len(ev.Labels) > 0)
	set(evKeep, ev.Keep)
	set(evAttached, ev.Attached)
	set(evResources, ev.Resources != nil)
	set(evRunState, ev.RunState != "")
	set(evDueAt, !ev.DueAt.IsZero())
	set(evStuck, ev.Stuck)

	b := make([]byte, 0, 64+len(ev.Key)+len(ev.Session)+len(ev.Detail)+len(ev.Error))
	b = append(b, eventFormat)
	b = binary.AppendUvarint(b, mask)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, ev.Time.UnixNano())
	for _, f := range []struct {
		bit int
		s   string
	}{{evKind, string(ev.Kind)}, {evKey, ev.Key}, {evSession, ev.Session}} {
		if mask&(1<<f.bit) != 0 {
			str(f.s)
		}
	}
	if ev.Actor != nil {
		b = binary.AppendUvarint(b, uint64(*ev.Actor))
	}
	for _, f := range []struct {
		bit int
		s   string
	}{{evActorToken, ev.ActorToken}, {evReason, string(ev.Reason)}, {evErrorClass, ev.ErrorClass}, {evError, ev.Error}, {evDetail, ev.Detail}} {
		if mask&(1<<f.bit) != 0 {
			str(f.s)
		}
	}
	if len(ev.Labels) > 0 {
		b = binary.AppendUvarint(b, uint64(len(ev.Labels)))
		for _, k := range slices.Sorted(maps.Keys(ev.Labels)) {
			str(k)
			str(ev.Labels[k])
		}
	}
	if r := ev.Resources; r != nil {
		for _, f := range []float64{r.VCPU, r.MemoryGiB, r.DiskGiB} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
		str(r.GPU)
		b = binary.AppendUvarint(b, uint64(max(r.GPUCount, 0)))
	}
	if ev.RunState != "" {
		str(string(ev.RunState))
	}
	if !ev.DueAt.IsZero() {
		b = binary.AppendVarint(b, ev.DueAt.UnixNano())
	}
	return b
}

// words are the strings events repeat, shared rather than allocated for
// each event.
var words = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		string(reaper.EventRegistered), string(reaper.EventTagged), string(reaper.EventCloseStarted), string(reaper.EventClosed),
		string(reaper.EventCloseFailed), string(reaper.EventReleased), string(reaper.EventAdopted), string(reaper.EventDiscovered),
		string(reaper.EventSkipped), string(reaper.EventSessionEnded), string(reaper.EventContradicted), string(reaper.EventQuarantined),
		string(reaper.EventStateChanged), string(reaper.EventResized), string(reaper.EventUntrackedGone),
		string(reaper.ReasonExpired), string(reaper.ReasonOrphanedLease), string(reaper.ReasonOrphanedProcess),
		string(reaper.ReasonSessionEnded), string(reaper.ReasonKeep), string(reaper.ReasonAttached), string(reaper.ReasonReleased),
		string(reaper.ReasonManual), string(reaper.ReasonAdopted), string(reaper.ReasonGone),
		string(reaper.RunStateRunning), string(reaper.RunStateStopped),
		"transient", "not_found", "unauthorized", "invalid", "conflict", "rate_limited", "timeout", "canceled", "accepted",
		string(reaper.EventCloseAccepted),
	} {
		m[s] = s
	}
	return m
}()

// decodeEvent reads an event in either form into ev.
func decodeEvent(v []byte, ev *reaper.AuditEvent) error { return decodeEventAs(v, ev, false) }

// decodeEventLean reads an event without its Detail and Error.
func decodeEventLean(v []byte, ev *reaper.AuditEvent) error { return decodeEventAs(v, ev, true) }

func decodeEventAs(v []byte, ev *reaper.AuditEvent, lean bool) error {
	*ev = reaper.AuditEvent{}
	if len(v) == 0 {
		return errEventFormat
	}
	if v[0] == '{' {
		if err := json.Unmarshal(v, ev); err != nil {
			return err
		}
		if lean {
			ev.Detail, ev.Error = "", ""
		}
		return nil
	}
	if v[0] != eventFormat {
		return errEventFormat
	}
	d := decoder{b: v[1:]}
	mask := d.uvarint()
	ev.Time = time.Unix(0, d.varint()).UTC()
	for bit := 1; bit < evFields && d.err == nil; bit++ {
		if mask&(1<<bit) == 0 {
			continue
		}
		switch bit {
		case evKind:
			ev.Kind = reaper.EventKind(d.word())
		case evKey:
			ev.Key = d.str()
		case evSession:
			ev.Session = d.str()
		case evActor:
			a := d.uvarint()
			if a > math.MaxUint32 {
				return errEventFormat
			}
			u := uint32(a)
			ev.Actor = &u
		case evActorToken:
			ev.ActorToken = d.str()
		case evReason:
			ev.Reason = reaper.Reason(d.word())
		case evErrorClass:
			ev.ErrorClass = d.word()
		case evError:
			if lean {
				d.bytes()
			} else {
				ev.Error = d.str()
			}
		case evDetail:
			if lean {
				d.bytes()
			} else {
				ev.Detail = d.str()
			}
		case evLabels:
			n := d.uvarint()
			if n > uint64(len(d.b)) {
				return errEventFormat
			}
			ev.Labels = make(map[string]string, n)
			for range n {
				k := d.str()
				ev.Labels[k] = d.str()
			}
		case evKeep:
			ev.Keep = true
		case evAttached:
			ev.Attached = true
		case evResources:
			r := &reaper.Resources{VCPU: d.float(), MemoryGiB: d.float(), DiskGiB: d.float()}
			r.GPU = d.str()
			r.GPUCount = int(min(d.uvarint(), math.MaxInt32))
			ev.Resources = r
		case evRunState:
			ev.RunState = reaper.RunState(d.word())
		case evDueAt:
			ev.DueAt = time.Unix(0, d.varint()).UTC()
		case evStuck:
			ev.Stuck = true
		}
	}
	return d.err
}

// decoder reads the binary form; its first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errEventFormat, nil }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str() string { return string(d.bytes()) }

// word reads a string, shared when it is one of the usual words.
func (d *decoder) word() string {
	b := d.bytes()
	if w, ok := words[string(b)]; ok {
		return w
	}
	return string(b)
}

func (d *decoder) float() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

// eventKey returns the sandbox key of a stored event without decoding the
// rest; "" when it has none or cannot be read.
func eventKey(v []byte) string {
	if len(v) > 0 && v[0] == '{' {
		var ev struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(v, &ev) != nil {
			return ""
		}
		return ev.Key
	}
	if len(v) == 0 || v[0] != eventFormat {
		return ""
	}
	d := decoder{b: v[1:]}
	mask := d.uvarint()
	d.varint()
	if mask&(1<<evKind) != 0 {
		d.bytes()
	}
	if mask&(1<<evKey) == 0 || d.err != nil {
		return ""
	}
	return d.str()
}
