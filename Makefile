# The two commands a newcomer needs: `make run` and `make test`. Both set up what is
# missing first (Debian 12; apt packages need root or sudo).

.PHONY: setup run test check bench ui console demo-headless packages apt-repo

setup:
	@bash scripts/setup.sh

run: setup ui console
	@bash scripts/demo.sh

# The guard where there is no desktop: under Xvfb, with screenshots in demo/screenshots.
demo-headless: setup ui
	@bash scripts/demo-headless.sh

test: setup ui console packages
	cd ui && npm run --silent check && npm test --silent
	cd console && npm run --silent check && npm test --silent
	# Tests start the other packages' binaries (wardlockd, wardlock-collector, the guard): build them all first.
	cargo build --workspace --bins --locked
	cargo test --workspace --locked

# The guard's front end, which its binary embeds: built before anything compiles the guard.
ui: setup
	cd ui && npm run --silent build

# The collector's web console (console/dist), which its binary embeds: built before the collector.
console: setup
	cd console && npm run --silent build

# Formatting and lints, as CI runs them.
# The Debian packages `wardlock` and `wardlock-collector`, into target/debian/ (lintian-checked).
packages: setup ui console
	@bash scripts/packages.sh

# A signed apt repository from target/debian/ in target/apt-repo/: WARDLOCK_APT_KEY=FINGERPRINT.
apt-repo: packages
	@bash scripts/apt-repo.sh

check: setup ui console
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	# Licences, sources and duplicate versions (deny.toml); the architecture test with it.
	cargo deny --locked check licenses bans sources
	cargo test --locked -p wardlock-e2e --test architecture

# Benchmarks; results go into docs/benchmarks.md by hand, with the machine they ran on.
bench: ui console
	@WARDLOCK_SETUP_BENCH=1 bash scripts/setup.sh
	cargo bench -p wardlock-core --bench core
	cargo bench -p wardlock-store --bench store
	cargo bench -p wardlock-agent --bench socket
	# The collector's intake beside rsyslog on the same events, each its own process: about 2 minutes.
	cargo bench -p wardlock-collector --bench ingest
	# First and last pages of 1,000,000 findings and events: about a minute.
	cargo bench -p wardlock-collector --bench paging
	# The console's questions of 1,000,000 entries from 5,000 workstations, SQLite and PostgreSQL: about 2 minutes.
	cargo bench -p wardlock-collector --bench console
	# The guard beside xss-lock + xsecurelock on Xvfb, 30 locks each: about 20 minutes (WARDLOCK_BENCH_* knobs).
	cargo build --release --workspace --bins
	cargo bench -p wardlock-e2e --bench guard
