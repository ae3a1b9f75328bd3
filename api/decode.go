package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// decode reads one JSON object from the body into v, strictly: unknown
// fields, trailing data and oversized bodies are errors. An empty body
// leaves v as is when allowEmpty.
func decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return reaper.Errorf(reaper.ETOOLARGE, "request body is larger than %d bytes", MaxBodyBytes)
	} else if err != nil {
		return reaper.Errorf(reaper.EINVALID, "read request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return reaper.Errorf(reaper.EINVALID, "request body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var de *reaper.DurationError
		if errors.As(err, &de) {
			if field := fieldWithValue(body, de.Input); field != "" {
				return reaper.Errorf(reaper.EINVALID, "%s: %v", field, de.Err)
			}
		}
		return reaper.Errorf(reaper.EINVALID, "invalid JSON body: %s", jsonErrorMessage(err))
	}
	if dec.More() {
		return reaper.Errorf(reaper.EINVALID, "invalid JSON body: unexpected data after the object")
	}
	return nil
}

// fieldWithValue returns the name of the top-level field of the JSON
// object body whose raw value is raw, or "" if there is none; it names the
// field behind an error that json does not attribute.
func fieldWithValue(body []byte, raw string) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if string(bytes.TrimSpace(obj[k])) == raw {
			return k
		}
	}
	return ""
}

func jsonErrorMessage(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %q must be a %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("expected a JSON object, not %s", te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends too early"
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + ": check the field names in the README's API section"
	}
	return msg
}

func jsonKind(k string) string {
	switch k {
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "list"
	case "int", "int64", "uint32", "float64":
		return "number"
	case "bool":
		return "boolean (true or false)"
	}
	return k
}

func onlyParams(q map[string][]string, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
			}
		}
		if !ok {
			return reaper.Errorf(reaper.EINVALID, "unknown query parameter %q: use %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, reaper.Errorf(reaper.EINVALID, "%s=%q: use a whole number of zero or more", name, v)
	}
	return n, nil
}

// ParseSince reads a --since value: a duration before now ("24h", "7d"),
// an RFC 3339 time, a date (midnight UTC), or empty for the beginning of
// the log.
func ParseSince(v string, now time.Time) (time.Time, error) { return ParseWhen("since", v, now) }

// ParseWhen reads the time parameter name: a duration before now ("24h",
// "7d"), an RFC 3339 time or a date (midnight UTC); empty gives the zero
// time.
func ParseWhen(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	d, err := reaper.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, reaper.Errorf(reaper.EINVALID, "%s=%q: use a duration before now such as 24h or 7d, a date such as 2026-01-02, or a time such as 2026-01-02T15:04:05Z", name, v)
	}
	return now.Add(-d), nil
}
