package reaper

import (
	"strings"
)

// Limits on client-supplied values.
const (
	MaxIDLen         = 256 // sandbox and session ids
	MaxLabels        = 64
	MaxLabelKeyLen   = 128
	MaxLabelValueLen = 512
)

// ParseKey splits an entry key PROVIDER/ID and validates both halves. It
// does not check that the provider is known; see Engine.
func ParseKey(key string) (provider, id string, err error) {
	provider, id, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", Errorf(EINVALID, "sandbox %q must be written PROVIDER/ID, e.g. daytona/7f3c2a", key)
	}
	if err := ValidateProviderName(provider); err != nil {
		return "", "", err
	}
	if err := ValidateID("sandbox id", id); err != nil {
		return "", "", err
	}
	return provider, id, nil
}

// ValidateProviderName checks the syntax of a provider name.
func ValidateProviderName(name string) error {
	if name == "" {
		return Errorf(EINVALID, "provider is empty: give one of daytona, e2b, modal, runloop")
	}
	if len(name) > 32 {
		return Errorf(EINVALID, "provider %.32q... is too long", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return Errorf(EINVALID, "provider %q is invalid: use a lowercase name such as daytona, e2b, modal or runloop", name)
		}
	}
	return nil
}

// ValidateID checks a sandbox or session id: 1 to 256 characters of
// letters, digits and . _ : - (no slashes, spaces or control characters),
// and neither "." nor "..", which URL paths would rewrite. what names the
// value in the error ("sandbox id", "session").
func ValidateID(what, id string) error {
	if id == "" {
		return Errorf(EINVALID, "%s is empty", what)
	}
	if id == "." || id == ".." {
		return Errorf(EINVALID, "%s %q is invalid: \".\" and \"..\" are path names, not ids", what, id)
	}
	if len(id) > MaxIDLen {
		return Errorf(EINVALID, "%s is %d bytes long; the limit is %d", what, len(id), MaxIDLen)
	}
	for _, r := range id {
		if !idRune(r) {
			return Errorf(EINVALID, "%s %q is invalid: it may hold only letters, digits and . _ : - (found %q)", what, id, r)
		}
	}
	return nil
}

func idRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == ':' || r == '-'
}

// ValidateLabels checks label count, keys and values. Keys are 1 to 128
// characters of letters, digits and . _ - / ; values are up to 512 printable
// characters.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Errorf(EINVALID, "%d labels given; the limit is %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" {
			return Errorf(EINVALID, "label key is empty: write labels as key=value")
		}
		if len(k) > MaxLabelKeyLen {
			return Errorf(EINVALID, "label key %.40q... is longer than %d bytes", k, MaxLabelKeyLen)
		}
		for _, r := range k {
			if !(idRune(r) && r != ':' || r == '/') {
				return Errorf(EINVALID, "label key %q is invalid: it may hold only letters, digits and . _ - /", k)
			}
		}
		if len(v) > MaxLabelValueLen {
			return Errorf(EINVALID, "label %q value is longer than %d bytes", k, MaxLabelValueLen)
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f {
				return Errorf(EINVALID, "label %q value holds a control character", k)
			}
		}
	}
	return nil
}

// ParseLabel splits a k=v label argument.
func ParseLabel(s string) (k, v string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", Errorf(EINVALID, "label %q must be written key=value", s)
	}
	return k, v, nil
}
