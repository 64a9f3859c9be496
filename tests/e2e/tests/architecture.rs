//! The architecture's invariants (ARCHITECTURE.md), checked on the source tree: a rule
//! that nothing enforces drifts. The crate graph comes from `cargo metadata`, and the
//! code is parsed (`syn`), whole files, with only `#[cfg(test)]` items left out.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId};
use syn::visit::Visit;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn metadata() -> Metadata {
    MetadataCommand::new().manifest_path(workspace().join("Cargo.toml")).exec().unwrap()
}

/// Direct normal (shipped) dependencies of workspace package `name`.
fn direct_dependencies(meta: &Metadata, name: &str) -> BTreeSet<String> {
    let package = meta.packages.iter().find(|p| p.name.as_str() == name).unwrap();
    package.dependencies.iter().filter(|d| d.kind == DependencyKind::Normal).map(|d| d.name.clone()).collect()
}

/// Every package `name` links when built (normal dependencies, transitively).
fn linked(meta: &Metadata, name: &str) -> BTreeSet<String> {
    let resolve = meta.resolve.as_ref().unwrap();
    let nodes: BTreeMap<&PackageId, _> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let names: BTreeMap<&PackageId, &str> = meta.packages.iter().map(|p| (&p.id, p.name.as_str())).collect();
    let start = &meta.packages.iter().find(|p| p.name.as_str() == name).unwrap().id;
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        for dep in &nodes[id].deps {
            let shipped = dep.dep_kinds.iter().any(|k| k.kind == DependencyKind::Normal);
            if shipped && seen.insert(names[&dep.pkg].to_owned()) {
                stack.push(&dep.pkg);
            }
        }
    }
    seen
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// A parsed file's product code: every item but those under `#[cfg(test)]`, and no
/// file that is a test module itself (`tests.rs` beside a `mod tests;`).
fn product_items(path: &Path) -> Vec<syn::Item> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.items.into_iter().filter(|item| !is_test_only(item_attrs(item))).collect()
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Names a piece of code uses: path segments (with the full path), methods called,
/// fields read.
#[derive(Default)]
struct Uses {
    paths: Vec<String>,
    methods: Vec<String>,
    fields: Vec<String>,
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.paths.push(segments.join("::"));
        syn::visit::visit_path(self, path);
    }
    fn visit_use_tree(&mut self, tree: &'ast syn::UseTree) {
        fn flatten(prefix: &str, tree: &syn::UseTree, out: &mut Vec<String>) {
            match tree {
                syn::UseTree::Path(p) => flatten(&format!("{prefix}{}::", p.ident), &p.tree, out),
                syn::UseTree::Name(n) => out.push(format!("{prefix}{}", n.ident)),
                syn::UseTree::Rename(r) => out.push(format!("{prefix}{}", r.ident)),
                syn::UseTree::Glob(_) => out.push(format!("{prefix}*")),
                syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten(prefix, t, out)),
            }
        }
        flatten("", tree, &mut self.paths);
    }
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.methods.push(call.method.to_string());
        syn::visit::visit_expr_method_call(self, call);
    }
    fn visit_expr_field(&mut self, field: &'ast syn::ExprField) {
        if let syn::Member::Named(name) = &field.member {
            self.fields.push(name.to_string());
        }
        syn::visit::visit_expr_field(self, field);
    }
}

fn uses_of(path: &Path) -> Uses {
    let mut uses = Uses::default();
    for item in product_items(path) {
        uses.visit_item(&item);
    }
    uses
}

#[test]
fn the_core_links_nothing_that_does_io() {
    // Pure computation only: crypto, encodings, time arithmetic, serde formats. A new
    // dependency of the core is a decision: add it here with a reason, or put the code
    // in a shell.
    const PURE: &[&str] = &[
        "argon2",
        "base64",
        "chacha20poly1305",
        "ed25519-dalek",
        "hex",
        "hpke",
        "rand_core",
        "humantime",
        "humantime-serde",
        "serde",
        "serde_json",
        "sha2",
        "subtle",
        "thiserror",
        "time",
        "toml",
        "toml_edit",
        "totp-rs",
        "zeroize",
        "utoipa",
    ];
    let deps = direct_dependencies(&metadata(), "wardlock-core");
    assert!(deps.contains("serde"), "the metadata was not read: {deps:?}");
    let impure: Vec<_> = deps.iter().filter(|d| !PURE.contains(&d.as_str())).collect();
    assert!(impure.is_empty(), "wardlock-core gained dependencies that are not known to be pure: {impure:?}");
}

#[test]
fn the_core_does_no_io_of_its_own() {
    const IO: &[&str] = &[
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "std::env",
        "std::io::stdin",
        "SystemTime",
        "Instant",
        "getrandom",
        "OsRng",
        "thread_rng",
        "tokio",
    ];
    let mut found = Vec::new();
    let files = rust_files(&workspace().join("crates/wardlock-core/src"));
    assert!(files.len() > 10, "the core's files were not found");
    for file in files {
        let uses = uses_of(&file);
        for path in &uses.paths {
            if IO.iter().any(|io| path.starts_with(io) || path.split("::").any(|s| s == *io)) {
                found.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must not do IO (time and randomness come in as arguments):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_store_crate_opens_the_workstation_database_or_its_secrets() {
    let meta = metadata();
    let members: Vec<&str> = meta.workspace_packages().iter().map(|p| p.name.as_str()).collect();
    for member in &members {
        let deps = direct_dependencies(&meta, member);
        // The collector keeps its own server database, never the workstation's.
        if *member != "wardlock-store" && *member != "wardlock-collector" {
            assert!(!deps.contains("rusqlite"), "{member} opens SQLite itself: {deps:?}");
        }
        if *member != "wardlock-store" {
            assert!(!deps.contains("keyring"), "{member} reaches the OS key store itself");
        }
        // Who may link the store: the service, IT's tool run as the service account.
        if deps.contains("wardlock-store") {
            assert!(
                ["wardlock-agent", "wardlockctl", "wardlock-testkit"].contains(member),
                "{member} links the workstation store"
            );
        }
    }
    // And in the code: `Store::open` and the data key are the store crate's and their
    // two users' (the service at its start, wardlockctl run as the service account).
    let root = workspace();
    let mut opened_in = BTreeSet::new();
    for dir in ["crates", "src-tauri/src"] {
        for file in rust_files(&root.join(dir)) {
            let relative = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            if relative.contains("/tests/") || relative.contains("/benches/") {
                continue;
            }
            let uses = uses_of(&file);
            let opens = |p: &String| {
                let segments: Vec<&str> = p.split("::").collect();
                matches!(segments.as_slice(), [.., "Store", "open"] | [.., "DataKey", "open_or_create"])
            };
            if uses.paths.iter().any(opens) {
                opened_in.insert(relative.split('/').take(2).collect::<Vec<_>>().join("/"));
            }
        }
    }
    let allowed: BTreeSet<String> =
        ["crates/wardlock-store", "crates/wardlock-agent", "crates/wardlockctl", "crates/wardlock-testkit"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    assert!(opened_in.contains("crates/wardlock-agent"), "the check looks in the wrong place: {opened_in:?}");
    assert!(opened_in.is_subset(&allowed), "the workstation database opened by {opened_in:?}");
}

#[test]
fn the_collector_s_queries_are_written_once_over_the_sql_layer() {
    // A query written against a driver would be a query for one backend only: the drivers
    // are the connection code's (and the error type's conversion from them).
    let root = workspace();
    let collector = root.join("crates/wardlock-collector/src");
    let connection_code = ["store/sqlite.rs", "store/sqlite/writer.rs", "store/pg.rs"];
    let mut seen_in_connection_code = 0;
    for file in rust_files(&collector) {
        let relative = file.strip_prefix(&collector).unwrap().to_string_lossy().into_owned();
        let drivers: Vec<String> = uses_of(&file)
            .paths
            .into_iter()
            .filter(|p| {
                ["rusqlite", "postgres", "r2d2_postgres"].contains(&p.split("::").next().unwrap_or(""))
            })
            .collect();
        if connection_code.contains(&relative.as_str()) {
            seen_in_connection_code += drivers.len();
        } else if relative == "store/mod.rs" {
            assert!(drivers.iter().all(|p| p == "rusqlite::Error"), "{relative} uses a driver: {drivers:?}");
        } else {
            assert!(drivers.is_empty(), "{relative} speaks to a database driver itself: {drivers:?}");
        }
    }
    assert!(seen_in_connection_code > 0, "the check looks in the wrong place");
}

#[test]
fn audit_entries_are_built_only_where_they_are_written() {
    let root = workspace();
    let writers = [root.join("crates/wardlock-store/src"), root.join("crates/wardlock-agent/src/service")];
    let mut offenders = Vec::new();
    let mut in_writers = 0;
    for dir in ["crates", "src-tauri/src"] {
        for file in rust_files(&root.join(dir)) {
            let relative = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            // Tests and benchmarks make entries of their own to test with; the core
            // defines the type.
            if relative.contains("/tests/")
                || relative.contains("/benches/")
                || relative.starts_with("crates/wardlock-core/")
                || relative.starts_with("crates/wardlock-testkit/")
            {
                continue;
            }
            let builds = uses_of(&file).paths.iter().any(|p| p.ends_with("AuditDraft::new"));
            if writers.iter().any(|w| file.starts_with(w)) {
                in_writers += usize::from(builds);
            } else if builds {
                offenders.push(relative);
            }
        }
    }
    assert!(in_writers >= 2, "no audit entry is built in the writers: the check looks in the wrong place");
    assert!(offenders.is_empty(), "audit entries built outside the store and the service: {offenders:?}");
}

#[test]
fn the_socket_layer_calls_no_store_and_no_logind() {
    let server = workspace().join("crates/wardlock-agent/src/server");
    let files = rust_files(&server);
    assert!(files.len() >= 2, "the socket layer was not found");
    for file in files {
        let uses = uses_of(&file);
        let forbidden_paths: Vec<_> = uses
            .paths
            .iter()
            .filter(|p| {
                p.starts_with("wardlock_store")
                    || p.contains("os_session")
                    || p.starts_with("zbus")
                    || p.contains("Store")
            })
            .collect();
        assert!(forbidden_paths.is_empty(), "{}: {forbidden_paths:?}", file.display());
        let reached: Vec<_> = uses
            .methods
            .iter()
            .chain(&uses.fields)
            .filter(|m| ["store", "sessions", "with_store", "data_key", "key"].contains(&m.as_str()))
            .collect();
        assert!(reached.is_empty(), "{} reaches the store or logind: {reached:?}", file.display());
    }
}

/// Calls that block (SQLite, NSS, files, fsync) found in async code of `wardlockd`
/// outside a closure handed to the blocking pool.
#[derive(Default)]
struct BlockingInAsync {
    in_async: bool,
    found: Vec<String>,
}

/// Helpers that run their closure on the blocking pool.
const ONTO_THE_BLOCKING_POOL: &[&str] = &["spawn_blocking", "blocking", "run"];
/// Methods and functions that block.
const BLOCKING_METHODS: &[&str] =
    &["store", "set_meta", "meta", "append", "commit", "write", "read_to_string"];
const BLOCKING_PATHS: &[&str] =
    &["std::fs", "fs::", "of_account", "resolve", "User::from_uid", "Store::open"];

impl BlockingInAsync {
    fn closure_args_run_blocking(&mut self, callee: &str, args: impl Iterator<Item = syn::Expr>) -> bool {
        if !ONTO_THE_BLOCKING_POOL.contains(&callee) {
            return false;
        }
        for arg in args {
            if let syn::Expr::Closure(_) = arg {
                let was = std::mem::replace(&mut self.in_async, false);
                self.visit_expr(&arg);
                self.in_async = was;
            } else {
                self.visit_expr(&arg);
            }
        }
        true
    }
}

impl<'ast> Visit<'ast> for BlockingInAsync {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let was = std::mem::replace(&mut self.in_async, f.sig.asyncness.is_some());
        syn::visit::visit_item_fn(self, f);
        self.in_async = was;
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let was = std::mem::replace(&mut self.in_async, f.sig.asyncness.is_some());
        syn::visit::visit_impl_item_fn(self, f);
        self.in_async = was;
    }
    fn visit_expr_async(&mut self, block: &'ast syn::ExprAsync) {
        let was = std::mem::replace(&mut self.in_async, true);
        syn::visit::visit_expr_async(self, block);
        self.in_async = was;
    }
    fn visit_expr_closure(&mut self, closure: &'ast syn::ExprClosure) {
        // A plain closure runs where it is called; an async one is async code.
        let was = self.in_async;
        if closure.asyncness.is_some() {
            self.in_async = true;
        }
        syn::visit::visit_expr_closure(self, closure);
        self.in_async = was;
    }
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(p) = &*call.func {
            let callee = p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            if self.closure_args_run_blocking(&callee, call.args.iter().cloned()) {
                return;
            }
            let full: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
            let full = full.join("::");
            let nonblocking = full.starts_with("tokio::") || full.contains("Permissions::");
            if self.in_async && !nonblocking && BLOCKING_PATHS.iter().any(|b| full.contains(b)) {
                self.found.push(full);
            }
        }
        syn::visit::visit_expr_call(self, call);
    }
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let name = call.method.to_string();
        if self.closure_args_run_blocking(&name, call.args.iter().cloned()) {
            self.visit_expr(&call.receiver);
            return;
        }
        if self.in_async && BLOCKING_METHODS.contains(&name.as_str()) {
            self.found.push(format!(".{name}()"));
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}

#[test]
fn nothing_blocks_on_wardlockds_async_threads() {
    let root = workspace().join("crates/wardlock-agent/src");
    let mut found = Vec::new();
    let mut async_fns = 0;
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        async_fns += text.matches("async fn").count();
        let mut check = BlockingInAsync::default();
        for item in product_items(&file) {
            check.visit_item(&item);
        }
        found.extend(check.found.into_iter().map(|f| format!("{}: {f}", file.display())));
    }
    assert!(async_fns > 10, "the service's async code was not found");
    assert!(
        found.is_empty(),
        "blocking calls on the async threads (hand them to spawn_blocking):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_links_nothing_that_holds_a_secret() {
    let meta = metadata();
    let linked = linked(&meta, "wardlock");
    assert!(linked.contains("tauri"), "the guard's dependencies were not read: {} packages", linked.len());
    for secret_holder in ["wardlock-store", "wardlock-agent", "rusqlite", "keyring", "libsqlite3-sys"] {
        assert!(!linked.contains(secret_holder), "the guard links {secret_holder}");
    }
}

#[test]
fn dependencies_point_inward() {
    let meta = metadata();
    let core = direct_dependencies(&meta, "wardlock-core");
    assert!(!core.iter().any(|d| d.starts_with("wardlock")), "the core depends on {core:?}");
    for shell in ["wardlock", "wardlock-collector"] {
        let d = direct_dependencies(&meta, shell);
        assert!(d.contains("wardlock-core"), "{shell} does not use the core: {d:?}");
        assert!(!d.contains("wardlock-agent") && !d.contains("wardlock-store"), "{shell}: {d:?}");
    }
    // The one client of the local protocol stands between the core and the shells.
    let client = direct_dependencies(&meta, "wardlock-client");
    assert!(client.contains("wardlock-core") && !client.contains("wardlock-agent"), "{client:?}");
    for user in ["wardlock", "wardlockctl"] {
        assert!(
            direct_dependencies(&meta, user).contains("wardlock-client"),
            "{user} talks to wardlockd without the client"
        );
    }
    // wardlockd is a program, not a library anyone links.
    for member in meta.workspace_packages() {
        assert!(
            !member.dependencies.iter().any(|d| d.name == "wardlock-agent"),
            "{} links wardlockd",
            member.name
        );
    }
    // The test kit starts real processes for tests; nothing shipped links it.
    for shipped in [
        "wardlock-core",
        "wardlock-store",
        "wardlock-agent",
        "wardlock-client",
        "wardlockctl",
        "wardlock-collector",
        "wardlock",
    ] {
        assert!(!linked(&meta, shipped).contains("wardlock-testkit"), "{shipped} links the test kit");
    }
}

/// The variant names of `enum name` in `file`, as serde writes them (snake_case).
fn variants(file: &Path, name: &str) -> Vec<String> {
    let parsed = syn::parse_file(&std::fs::read_to_string(file).unwrap()).unwrap();
    let found = parsed.items.iter().find_map(|item| match item {
        syn::Item::Enum(e) if e.ident == name => Some(e),
        _ => None,
    });
    let snake = |ident: &syn::Ident| {
        let mut out = String::new();
        for (i, c) in ident.to_string().chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    found.unwrap_or_else(|| panic!("no enum {name}")).variants.iter().map(|v| snake(&v.ident)).collect()
}

/// The backticked names in the first cell of each row of the markdown table after
/// `heading` (only the first of each cell with `first_only`).
fn table_names(doc: &str, heading: &str, first_only: bool) -> BTreeSet<String> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
    let mut names = BTreeSet::new();
    let mut rows = 0;
    for line in doc[start..].lines().skip(1) {
        if line.starts_with('|') {
            rows += 1;
            // The header and the separator.
            if rows <= 2 {
                continue;
            }
            let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
            let quoted = first.split('`').skip(1).step_by(2).take(if first_only { 1 } else { usize::MAX });
            for part in quoted {
                let name = part.split([' ', '{']).next().unwrap_or("");
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    names.insert(name.to_owned());
                }
            }
        } else if rows > 0 {
            break;
        }
    }
    names
}

#[test]
fn the_audit_events_doc_lists_exactly_the_audit_kinds() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/audit-events.md")).unwrap();
    let documented = table_names(&doc, "## Kinds", false);
    let kinds: BTreeSet<String> =
        variants(&root.join("crates/wardlock-core/src/audit.rs"), "AuditKind").into_iter().collect();
    let missing: Vec<_> = kinds.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&kinds).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/audit-events.md: undocumented {missing:?}, no such kind {stale:?}"
    );
}

#[test]
fn the_local_protocol_doc_lists_exactly_the_messages() {
    let root = workspace();
    let local = root.join("crates/wardlock-core/src/protocol/local.rs");
    let doc = std::fs::read_to_string(root.join("docs/local-protocol.md")).unwrap();
    let requests: BTreeSet<String> = variants(&local, "Request").into_iter().collect();
    let documented = table_names(&doc, "## Requests", true);
    let missing: Vec<_> = requests.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&requests).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "requests: undocumented {missing:?}, no such request {stale:?}"
    );
    // Every answer, guard event and error code is named in the doc.
    let mut unnamed = Vec::new();
    for (enum_name, what) in
        [("Response", "answer"), ("GuardEvent", "guard event"), ("ErrorCode", "error code")]
    {
        for name in variants(&local, enum_name) {
            if !doc.contains(&format!("`{name}")) {
                unnamed.push(format!("the {what} `{name}`"));
            }
        }
    }
    assert!(unnamed.is_empty(), "docs/local-protocol.md does not name {}", unnamed.join(", "));
}
