package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	apiclient "github.com/daytonaio/daytona/libs/api-client-go"

	"github.com/reaperd/reaperd/reaper"
)

// classify turns a failed call into a *reaper.ProviderError. verb names the
// HTTP call ("delete sandbox"); resp may be nil (transport error). The
// generic mapping is kit.Errors.Status; a 403 also names the organization
// setting when one is configured.
func (p *Provider) classify(ctx context.Context, op, id, verb string, resp *http.Response, err error) error {
	if ctx.Err() != nil || resp == nil {
		return p.errs.Transport(ctx, op, id, verb, err)
	}
	// 400 (such as "Cannot delete sandbox which has active fork children")
	// stays transient: Daytona answers it for a sandbox's state, not for a
	// malformed id.
	pe := p.errs.Status(op, id, verb, resp.StatusCode, resp.Header, bodyOf(resp, err))
	if resp.StatusCode == http.StatusForbidden {
		pe.Hint = "check " + EnvAPIKey + " (the key needs the sandbox read and delete permissions)"
		if p.org != "" {
			pe.Hint += " and " + EnvOrganizationID
		}
	}
	return pe
}

// bodyOf returns the response body the generated client already read: it
// keeps it in its error and puts a re-readable copy back on the response.
func bodyOf(resp *http.Response, err error) []byte {
	var gerr *apiclient.GenericOpenAPIError
	if errors.As(err, &gerr) && len(gerr.Body()) > 0 {
		return gerr.Body()
	}
	if resp == nil || resp.Body == nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// labelsParam encodes a label filter the way the API's "labels" query
// parameter expects: a JSON object, keys sorted. Empty for no filter.
func labelsParam(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "", nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(labels); err != nil {
		return "", fmt.Errorf("encode labels filter: %w", err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// rawSandbox holds the fields reaperd needs, read leniently from a body the
// generated models could not decode (a missing required property, a state
// this client version does not know).
type rawSandbox struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	Snapshot       string            `json:"snapshot"`
	State          string            `json:"state"`
	Labels         map[string]string `json:"labels"`
	CreatedAt      string            `json:"createdAt"`
	LastActivityAt string            `json:"lastActivityAt"`
	CPU            float64           `json:"cpu"`
	Memory         float64           `json:"memory"`
	Disk           float64           `json:"disk"`
	GPU            float64           `json:"gpu"`
}

// resources returns a sandbox's size from the API's cpu (vCPUs), memory
// and disk (GiB) and gpu (a count; Daytona does not name the type). Nil
// when it reports none.
func resources(cpu, memory, disk, gpu float64) *reaper.Resources {
	if cpu <= 0 && memory <= 0 && disk <= 0 && gpu <= 0 {
		return nil
	}
	r := &reaper.Resources{VCPU: cpu, MemoryGiB: memory, DiskGiB: disk}
	if gpu > 0 {
		r.GPU, r.GPUCount = "unnamed", int(gpu)
	}
	return r
}

func rawState(body []byte) string {
	var s rawSandbox
	if json.Unmarshal(body, &s) != nil {
		return ""
	}
	return s.State
}

// decodeList turns one page of GET /sandbox into sandboxes and the next
// cursor ("" on the last page). Name is the sandbox's name (Daytona names
// every sandbox; an unnamed one is named after its id) and Template its
// snapshot, when the API reports one (a sandbox built from an image or a
// Dockerfile may have none).
func decodeList(res *apiclient.ListSandboxesResponse, resp *http.Response, err error) ([]reaper.Sandbox, string, error) {
	if err == nil && res != nil {
		var raw map[string]string // id -> state, read only if needed
		out := make([]reaper.Sandbox, 0, len(res.Items))
		for _, it := range res.Items {
			sb := reaper.Sandbox{ID: it.Id, Name: it.Name, Template: it.GetSnapshot(),
				Labels: it.Labels, CreatedAt: parseTime(it.CreatedAt), LastActivityAt: parseTime(it.LastActivityAt),
				Resources: resources(float64(it.Cpu), float64(it.Memory), float64(it.Disk), float64(it.Gpu))}
			if it.State != nil && *it.State != apiclient.SANDBOXSTATE_UNKNOWN_DEFAULT_OPEN_API {
				sb.State = string(*it.State)
			} else if it.State != nil {
				if raw == nil {
					raw = rawStates(bodyOf(resp, nil))
				}
				sb.State = raw[it.Id]
			}
			out = append(out, sb)
		}
		return out, res.GetNextCursor(), nil
	}
	body := bodyOf(resp, err)
	var page struct {
		Items      *[]rawSandbox `json:"items"`
		NextCursor *string       `json:"nextCursor"`
	}
	if len(body) == 0 || json.Unmarshal(body, &page) != nil || page.Items == nil {
		if err == nil {
			err = errors.New("empty response")
		}
		return nil, "", err
	}
	out := make([]reaper.Sandbox, 0, len(*page.Items))
	for _, it := range *page.Items {
		out = append(out, reaper.Sandbox{ID: it.ID, Name: it.Name, Template: it.Snapshot, State: it.State,
			Labels: it.Labels, CreatedAt: parseTime(&it.CreatedAt), LastActivityAt: parseTime(&it.LastActivityAt),
			Resources: resources(it.CPU, it.Memory, it.Disk, it.GPU)})
	}
	next := ""
	if page.NextCursor != nil {
		next = *page.NextCursor
	}
	return out, next, nil
}

func rawStates(body []byte) map[string]string {
	var page struct {
		Items []rawSandbox `json:"items"`
	}
	out := map[string]string{}
	if json.Unmarshal(body, &page) == nil {
		for _, it := range page.Items {
			out[it.ID] = it.State
		}
	}
	return out
}

// parseTime parses the API's ISO 8601 timestamps
// ("2026-03-04T05:06:07.000Z"); zero when absent or malformed.
func parseTime(s *string) time.Time {
	if s == nil || *s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}
