package main

import (
	"time"

	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/e2b"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/reaper"
)

// providerKind is how reaperd builds one provider: from the provider's own
// environment variables, overridden by its [providers.NAME] table.
type providerKind struct {
	name string
	// credentials tells an operator how to enable the provider.
	credentials string
	// keys are the keys of [providers.NAME] this provider takes beyond
	// the ones every provider takes (enabled, api_url, timeout, rate).
	keys []string
	// build returns the provider, or nil when it has no credentials.
	// secret is api_key or the contents of api_key_file, token is
	// token_secret or the contents of token_secret_file ("" when unset).
	build func(pc ProviderConfig, secret, token string, env func(string) string) (reaper.Provider, error)
	// prices are the provider's published list prices, nil when reaperd
	// ships none; cleanup is what the provider does by itself with a
	// sandbox nobody deletes (for the report's saved figure).
	prices  *reaper.PriceList
	cleanup reaper.Cleanup
	// rate and concurrency are the default pace of its closes, set from
	// the provider's documented rate limits (see each package's
	// DefaultRate).
	rate        float64
	concurrency int
}

// providerKinds lists every provider reaperd has a backend for, in the
// order they are built and reported.
var providerKinds = []providerKind{
	{
		name:        daytona.Type,
		prices:      &daytona.ListPrices,
		cleanup:     daytona.Cleanup,
		rate:        daytona.DefaultRate,
		concurrency: daytona.DefaultConcurrency,
		credentials: "set DAYTONA_API_KEY (or api_key_file in [providers.daytona]) and restart reaperd",
		keys:        []string{"api_key", "api_key_file"},
		build: func(pc ProviderConfig, secret, _ string, env func(string) string) (reaper.Provider, error) {
			cfg := daytona.ConfigFromEnv(env)
			setIf(&cfg.APIKey, secret)
			setIf(&cfg.APIURL, pc.APIURL)
			cfg.Timeout = time.Duration(pc.Timeout)
			if !cfg.Enabled() {
				return nil, nil
			}
			p, err := daytona.New(cfg)
			return nilIfErr(p, err), err
		},
	},
	{
		name:        e2b.Type,
		prices:      &e2b.ListPrices,
		cleanup:     e2b.Cleanup,
		rate:        e2b.DefaultRate,
		concurrency: e2b.DefaultConcurrency,
		credentials: "set E2B_API_KEY (or api_key_file in [providers.e2b]) and restart reaperd",
		keys:        []string{"api_key", "api_key_file"},
		build: func(pc ProviderConfig, secret, _ string, env func(string) string) (reaper.Provider, error) {
			cfg := e2b.ConfigFromEnv(env)
			setIf(&cfg.APIKey, secret)
			setIf(&cfg.APIURL, pc.APIURL)
			cfg.Timeout = time.Duration(pc.Timeout)
			if !cfg.Enabled() {
				return nil, nil
			}
			p, err := e2b.New(cfg)
			return nilIfErr(p, err), err
		},
	},
	{
		name:        modal.Type,
		prices:      &modal.ListPrices,
		cleanup:     modal.Cleanup,
		rate:        modal.DefaultRate,
		concurrency: modal.DefaultConcurrency,
		credentials: "set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or [providers.modal]) and restart reaperd",
		keys:        []string{"token_id", "token_secret", "token_secret_file", "environment", "environments"},
		build: func(pc ProviderConfig, _, token string, env func(string) string) (reaper.Provider, error) {
			cfg := modal.ConfigFromEnv(env)
			setIf(&cfg.TokenID, pc.TokenID)
			setIf(&cfg.TokenSecret, token)
			setIf(&cfg.ServerURL, pc.APIURL)
			setIf(&cfg.Environment, pc.Environment)
			cfg.Environments = pc.Environments
			cfg.Timeout = time.Duration(pc.Timeout)
			if !cfg.Enabled() {
				return nil, nil
			}
			p, err := modal.New(cfg)
			return nilIfErr(p, err), err
		},
	},
	{
		name:        runloop.Type,
		cleanup:     runloop.Cleanup,
		rate:        runloop.DefaultRate,
		concurrency: runloop.DefaultConcurrency,
		credentials: "set RUNLOOP_API_KEY (or api_key_file in [providers.runloop]) and restart reaperd",
		keys:        []string{"api_key", "api_key_file", "force_after"},
		build: func(pc ProviderConfig, secret, _ string, env func(string) string) (reaper.Provider, error) {
			cfg := runloop.ConfigFromEnv(env)
			setIf(&cfg.APIKey, secret)
			setIf(&cfg.BaseURL, pc.APIURL)
			if pc.ForceAfter != 0 {
				cfg.ForceAfter = pc.ForceAfter
			}
			cfg.Timeout = time.Duration(pc.Timeout)
			if !cfg.Enabled() {
				return nil, nil
			}
			p, err := runloop.New(cfg)
			return nilIfErr(p, err), err
		},
	},
}

// nilIfErr keeps a typed nil pointer out of the reaper.Provider interface.
func nilIfErr[P reaper.Provider](p P, err error) reaper.Provider {
	if err != nil {
		return nil
	}
	return p
}

// providerKindOf returns the kind named name.
func providerKindOf(name string) (providerKind, bool) {
	for _, k := range providerKinds {
		if k.name == name {
			return k, true
		}
	}
	return providerKind{}, false
}

// providerNames lists every provider reaperd has a backend for.
var providerNames = func() []string {
	var out []string
	for _, k := range providerKinds {
		out = append(out, k.name)
	}
	return out
}()

// setKeys returns the provider-specific keys pc sets, in the order of its
// fields.
func (pc ProviderConfig) setKeys() []string {
	var out []string
	add := func(set bool, key string) {
		if set {
			out = append(out, key)
		}
	}
	add(pc.APIKey != "", "api_key")
	add(pc.APIKeyFile != "", "api_key_file")
	add(pc.TokenID != "", "token_id")
	add(pc.TokenSecret != "", "token_secret")
	add(pc.TokenSecretFile != "", "token_secret_file")
	add(pc.Environment != "", "environment")
	add(len(pc.Environments) > 0, "environments")
	add(pc.ForceAfter != 0, "force_after")
	return out
}
