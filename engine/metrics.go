package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus metrics. A nil *Metrics records
// nothing. Queue lengths and pauses are read when scraped (see Collect).
type Metrics struct {
	Registrations  *prometheus.CounterVec // provider
	CloseAttempts  *prometheus.CounterVec // provider, result (ok or error class)
	Closed         *prometheus.CounterVec // provider, reason
	Released       prometheus.Counter
	InFlight       prometheus.Gauge
	Passes         *prometheus.CounterVec // kind: deadline, full
	PassDuration   prometheus.Histogram
	Panics         prometheus.Counter
	CloseDuration  *prometheus.HistogramVec // provider
	NextDeadline   prometheus.Gauge
	Pruned         prometheus.Counter
	Untracked      *prometheus.GaugeVec // provider
	ProcessExits   prometheus.Counter
	LeaseLapses    prometheus.Counter
	ProviderActive *prometheus.GaugeVec // provider
	PassErrors     prometheus.Counter
	Quarantined    prometheus.Counter
	Recoveries     *prometheus.CounterVec // provider
	QueueLength    *prometheus.GaugeVec   // provider
	ProviderPaused *prometheus.GaugeVec   // provider
	Contradictions *prometheus.CounterVec // provider
	Unverified     *prometheus.GaugeVec   // provider
	// AdoptionMatches counts the untracked sandboxes each adoption rule
	// matches, at the last discovery.
	AdoptionMatches *prometheus.GaugeVec   // provider, rule, action
	Adopted         *prometheus.CounterVec // provider, rule
	// LastSweep is when the last full sweep's pass succeeded.
	LastSweep prometheus.Gauge
	// LastListing is when each provider's last discovery listing
	// succeeded.
	LastListing *prometheus.GaugeVec // provider
	// ListErrors counts failed listings, by provider and purpose
	// (discovery, or confirmation: confirming not-founds and verifying
	// registrations).
	ListErrors *prometheus.CounterVec // provider, purpose
}

// NewMetrics creates the engine's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Registrations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_registrations_total",
			Help: "Sandboxes registered, by provider."}, []string{"provider"}),
		CloseAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_close_attempts_total",
			Help: "Provider close calls, by provider and result (ok or error class)."}, []string{"provider", "result"}),
		Closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_closed_total",
			Help: "Entries recorded closed, by provider and reason."}, []string{"provider", "reason"}),
		Released: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_released_total",
			Help: "Entries released."}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reaperd_closes_in_flight",
			Help: "Provider close calls outstanding."}),
		Passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_passes_total",
			Help: "Engine passes, by kind: deadline (timer) or full (schedule or request)."}, []string{"kind"}),
		PassDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reaperd_pass_duration_seconds",
			Help: "Time to select due entries and commit their transitions.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_panics_total",
			Help: "Panics recovered in engine passes and provider calls."}),
		CloseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "reaperd_close_duration_seconds",
			Help: "Provider close call latency.", Buckets: prometheus.ExponentialBuckets(0.01, 3, 9)}, []string{"provider"}),
		NextDeadline: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reaperd_next_deadline_timestamp_seconds",
			Help: "Unix time of the earliest deadline in the ledger (0 when none)."}),
		Pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_pruned_total",
			Help: "Entries, sessions and audit events pruned after their retention."}),
		Untracked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_untracked_sandboxes",
			Help: "Live sandboxes at the provider that the ledger does not track, at the last discovery."}, []string{"provider"}),
		ProcessExits: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_session_process_exits_total",
			Help: "Sessions ended because their process exited."}),
		LeaseLapses: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_session_lease_lapses_total",
			Help: "Sessions ended because their lease lapsed."}),
		ProviderActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_provider_enabled",
			Help: "1 for each provider that has credentials, 0 for known providers without."}, []string{"provider"}),
		PassErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_pass_errors_total",
			Help: "Engine passes that failed (the ledger could not be read or written); each is retried with backoff."}),
		Quarantined: prometheus.NewCounter(prometheus.CounterOpts{Name: "reaperd_quarantined_records_total",
			Help: "Ledger records moved aside because they could not be decoded; their sandboxes are left alone."}),
		Recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_provider_recoveries_total",
			Help: "Times a failing provider answered again and its backed-off closes were retried at once."}, []string{"provider"}),
		QueueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_close_queue_length",
			Help: "Closes waiting in a provider's close queue, running ones included."}, []string{"provider"}),
		ProviderPaused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_provider_paused_until_timestamp_seconds",
			Help: "Unix time until which a provider asked reaperd to wait (Retry-After); 0 when it did not."}, []string{"provider"}),
		Contradictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_provider_contradictions_total",
			Help: "Closes a provider answered not-found while its listing still showed the sandbox; the closes are retried."}, []string{"provider"}),
		Unverified: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_unverified_entries",
			Help: "Registered sandboxes that the provider's listing does not show to reaperd's credentials, at the last listing."}, []string{"provider"}),
		AdoptionMatches: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_adoption_matches",
			Help: "Untracked sandboxes each adoption rule matches, at the last discovery (adopted ones included)."}, []string{"provider", "rule", "action"}),
		Adopted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_adopted_total",
			Help: "Untracked sandboxes adopted by a reap rule, to be closed."}, []string{"provider", "rule"}),
		LastSweep: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reaperd_last_sweep_success_timestamp_seconds",
			Help: "Unix time of the last full sweep whose pass succeeded (0 before the first)."}),
		LastListing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_last_discovery_success_timestamp_seconds",
			Help: "Unix time of each provider's last successful discovery listing."}, []string{"provider"}),
		ListErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reaperd_listing_errors_total",
			Help: "Provider listings that failed, by provider and purpose: discovery, or confirmation (of not-founds and registrations)."}, []string{"provider", "purpose"}),
	}
	if reg != nil {
		reg.MustRegister(m.Registrations, m.CloseAttempts, m.Closed, m.Released, m.InFlight, m.Passes,
			m.PassDuration, m.Panics, m.CloseDuration, m.NextDeadline, m.Pruned, m.Untracked,
			m.ProcessExits, m.LeaseLapses, m.ProviderActive, m.PassErrors, m.Quarantined, m.Recoveries,
			m.QueueLength, m.ProviderPaused, m.Contradictions, m.Unverified, m.AdoptionMatches, m.Adopted,
			m.LastSweep, m.LastListing, m.ListErrors)
	}
	return m
}
