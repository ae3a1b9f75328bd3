# reaperd: build, install and package.
#
#   make                     the binary (build/reaperd), man pages and shell completions
#   sudo make install        install under PREFIX (default /usr/local); DESTDIR stages
#   sudo make uninstall      remove what install put there (not the config, not the ledger)
#   make deb rpm             packages in dist/ (nfpm, a tool dependency in go.mod)
#
# VERSION and COMMIT come from git; set them on the command line to override.

GO ?= go

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
UNITDIR     ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
SYSCONFDIR  ?= /etc
DESTDIR     ?=

BUILDDIR ?= build
DISTDIR  ?= dist

ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null)
endif
VERSION := $(or $(VERSION),dev)
ifeq ($(origin COMMIT),undefined)
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
endif
# Package version: a leading "v" dropped, "-" (git describe's separators)
# turned into "."; an untagged tree (a bare commit hash) is 0.0.0+git.HASH.
ifeq ($(origin PKG_VERSION),undefined)
PKG_VERSION := $(shell echo '$(VERSION)' | sed -E 's/^v//; s/-/./g; /^[0-9]+\.[0-9]/!s/^/0.0.0+git./')
endif
# The date in man pages and on packaged files: that of the last commit.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null)
endif
ifneq ($(SOURCE_DATE_EPOCH),)
export SOURCE_DATE_EPOCH
endif

goenv      := $(shell $(GO) env GOOS GOARCH GOHOSTOS GOHOSTARCH)
GOOS       := $(or $(GOOS),$(word 1,$(goenv)))
GOARCH     := $(or $(GOARCH),$(word 2,$(goenv)))
GOHOSTOS   := $(word 3,$(goenv))
GOHOSTARCH := $(word 4,$(goenv))

GOBUILDFLAGS ?= -trimpath
LDFLAGS      := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN          := $(BUILDDIR)/reaperd
UNITS        := $(wildcard deploy/systemd/*.service deploy/systemd/*.socket)

# Tools run on this machine, whatever GOOS/GOARCH the binary is for.
HOSTGO := GOOS=$(GOHOSTOS) GOARCH=$(GOHOSTARCH) $(GO)
NFPM   := $(HOSTGO) tool nfpm
# Man pages and completion scripts come from the command tree: reaperd run
# on this machine (built for it when the binary is not).
ifeq ($(GOOS)/$(GOARCH),$(GOHOSTOS)/$(GOHOSTARCH))
HOSTREAPERD = $(BIN)
else
HOSTREAPERD = $(HOSTGO) run -ldflags "$(LDFLAGS)" ./cmd/reaperd
endif

.PHONY: all build man completions install uninstall deb rpm pkg-stage clean

all: build man completions

define go-build
GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build $(GOBUILDFLAGS) -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/reaperd
endef

build:
	$(go-build)

# install uses what `make` built, building only what is missing: `sudo make
# install` after `make` does not rebuild as root.
$(BIN):
	$(go-build)

define gen-man
rm -rf $(BUILDDIR)/man
$(HOSTREAPERD) man $(BUILDDIR)/man
endef

define gen-completions
mkdir -p $(BUILDDIR)/completions
$(HOSTREAPERD) completion bash > $(BUILDDIR)/completions/reaperd
$(HOSTREAPERD) completion zsh > $(BUILDDIR)/completions/_reaperd
$(HOSTREAPERD) completion fish > $(BUILDDIR)/completions/reaperd.fish
endef

man: build
	$(gen-man)

completions: build
	$(gen-completions)

$(BUILDDIR)/man/reaperd.1: | $(BIN)
	$(gen-man)

$(BUILDDIR)/completions/reaperd: | $(BIN)
	$(gen-completions)

install: $(BIN) $(BUILDDIR)/man/reaperd.1 $(BUILDDIR)/completions/reaperd
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(SYSCONFDIR)/reaperd $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/reaperd
	@# A unit's ExecStart= names the binary where this install puts it.
	for u in $(UNITS); do \
		dst=$(DESTDIR)$(UNITDIR)/$$(basename "$$u"); \
		sed 's|/usr/local/bin/reaperd|$(BINDIR)/reaperd|g' "$$u" > "$$dst" && chmod 0644 "$$dst" || exit 1; \
	done
	install -m 0644 deploy/systemd/reaperd.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/reaperd.conf
	install -m 0644 deploy/reaperd.toml.example $(DESTDIR)$(SYSCONFDIR)/reaperd/reaperd.toml.example
	@# The unit needs a config file; an existing one is never replaced.
	test -e $(DESTDIR)$(SYSCONFDIR)/reaperd/reaperd.toml || \
		install -m 0644 deploy/reaperd.toml.example $(DESTDIR)$(SYSCONFDIR)/reaperd/reaperd.toml
	install -m 0644 $(BUILDDIR)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILDDIR)/completions/reaperd $(DESTDIR)$(BASHCOMPDIR)/reaperd
	install -m 0644 $(BUILDDIR)/completions/_reaperd $(DESTDIR)$(ZSHCOMPDIR)/_reaperd
	install -m 0644 $(BUILDDIR)/completions/reaperd.fish $(DESTDIR)$(FISHCOMPDIR)/reaperd.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/reaperd
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS)))
	rm -f $(DESTDIR)$(SYSUSERSDIR)/reaperd.conf
	rm -f $(DESTDIR)$(SYSCONFDIR)/reaperd/reaperd.toml.example
	rm -f $(DESTDIR)$(MANDIR)/man1/reaperd.1 $(DESTDIR)$(MANDIR)/man1/reaperd-*.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/reaperd $(DESTDIR)$(ZSHCOMPDIR)/_reaperd $(DESTDIR)$(FISHCOMPDIR)/reaperd.fish
	@echo "kept: $(DESTDIR)$(SYSCONFDIR)/reaperd (config, keys) and /var/lib/reaperd (the ledger)"

# What the packages take from BUILDDIR (see deploy/nfpm.yaml).
pkg-stage: build man completions
	rm -rf $(BUILDDIR)/pkg
	mkdir -p $(BUILDDIR)/pkg/units $(BUILDDIR)/pkg/man
	for u in $(UNITS); do \
		sed 's|/usr/local/bin/reaperd|/usr/bin/reaperd|g' "$$u" > $(BUILDDIR)/pkg/units/$$(basename "$$u") || exit 1; \
	done
	for p in $(BUILDDIR)/man/*.1; do \
		gzip -9n < "$$p" > $(BUILDDIR)/pkg/man/$$(basename "$$p").gz || exit 1; \
	done

deb rpm: pkg-stage
	mkdir -p $(DISTDIR)
	PKG_VERSION='$(PKG_VERSION)' PKG_ARCH=$(GOARCH) BUILDDIR='$(abspath $(BUILDDIR))' \
		$(NFPM) package --config deploy/nfpm.yaml --packager $@ --target $(DISTDIR)/

clean:
	rm -rf $(BUILDDIR) $(DISTDIR)
