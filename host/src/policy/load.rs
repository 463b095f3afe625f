//! Finding, vetting and loading plugin files; policy instances.
//!
//! **Lookup.** A plugin given with a `/` in it is used as is. A bare name is looked for in the
//! directories of `$XSCHED_PLUGIN_PATH` (colon-separated), then beside the running binary, then
//! in [`SYSTEM_PLUGIN_DIR`]; a bare name without `.so` also matches `lib<name>.so`, so
//! `fairshare` finds `libfairshare.so`.
//!
//! **Trust.** Loading a library runs its code, with the host's privileges (root, to write
//! guest memory). Like sudo with its plugins, xsched refuses a plugin unless the file and every
//! directory above it (after resolving symlinks) are owned by root or by the current user and
//! writable by no one else: not by others, and not by a group other than root's. The one
//! exception is a sticky world-writable directory such as `/tmp`, where others may add files but
//! cannot replace ours. These checks run before the library is opened.
//!
//! **Loading.** The file must be an ELF shared object; the dynamic loader opens it; its
//! abi_stable header must be compatible; its root module must be xsched's, built against the
//! same major interface version, with compatible type layouts
//! ([`xsched_plugin_api::accept`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RStr;
use xsched_plugin_api::{accept, Decision, PolicyBox, PolicyModRef, Refusal, Snapshot, INTERFACE_VERSION};

use super::hint::HintKeeper;
use super::{ranking_of, update_snapshot, update_snapshot_changes, PolicyError, Ranked, Ranker};
use crate::table::{TaskKey, TaskTable};

/// The environment variable with extra plugin directories (colon-separated, searched first).
pub const PLUGIN_PATH_VAR: &str = "XSCHED_PLUGIN_PATH";

/// The system's plugin directory, searched last.
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/lib/xsched/plugins";

/// The plugin search path: `$XSCHED_PLUGIN_PATH`, the running binary's directory, then
/// [`SYSTEM_PLUGIN_DIR`].
pub fn search_path() -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
    search_path_from(std::env::var_os(PLUGIN_PATH_VAR).as_deref(), exe_dir)
}

/// The search path for a given `$XSCHED_PLUGIN_PATH` value and binary directory.
fn search_path_from(var: Option<&OsStr>, exe_dir: Option<PathBuf>) -> Vec<PathBuf> {
    let from_var = var.into_iter().flat_map(|v| v.as_bytes().split(|&b| b == b':'));
    let mut dirs: Vec<PathBuf> = from_var.filter(|d| !d.is_empty()).map(|d| PathBuf::from(OsStr::from_bytes(d))).collect();
    dirs.extend(exe_dir);
    dirs.push(PathBuf::from(SYSTEM_PLUGIN_DIR));
    dirs
}

/// Where the plugin `spec` is: as is when it has a `/`, else the first match on [`search_path`].
pub fn resolve(spec: &Path) -> Result<PathBuf, PolicyError> {
    resolve_in(spec, &search_path())
}

fn resolve_in(spec: &Path, dirs: &[PathBuf]) -> Result<PathBuf, PolicyError> {
    let raw = spec.as_os_str().as_bytes();
    if raw.contains(&b'/') {
        return Ok(spec.to_path_buf());
    }
    let mut names = vec![spec.to_path_buf()];
    if !raw.ends_with(b".so") {
        let mut lib = std::ffi::OsString::from("lib");
        lib.push(spec.as_os_str());
        lib.push(".so");
        names.push(PathBuf::from(lib));
    }
    dirs.iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| PolicyError::NotFound { name: spec.display().to_string(), searched: dirs.to_vec() })
}

/// Refuses `path` unless it and every directory above it are safe from other users.
fn check_trusted(path: &Path) -> Result<(), PolicyError> {
    let io = |source| PolicyError::Io { path: path.to_path_buf(), source };
    let real = path.canonicalize().map_err(io)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for (depth, item) in real.ancestors().enumerate() {
        let meta = fs::metadata(item).map_err(io)?;
        let what = if depth == 0 { "the file".to_string() } else { format!("directory {}", item.display()) };
        let insecure = |why: String| PolicyError::Insecure { path: path.to_path_buf(), why };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(insecure(format!("{what} is owned by uid {}, neither root nor you", meta.uid())));
        }
        let mode = meta.mode();
        let sticky_dir = depth > 0 && mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky_dir {
            return Err(insecure(format!("{what} is writable by others (mode {:o})", mode & 0o7777)));
        }
        if mode & 0o020 != 0 && meta.gid() != 0 && !sticky_dir {
            return Err(insecure(format!("{what} is writable by group {} (mode {:o})", meta.gid(), mode & 0o7777)));
        }
    }
    Ok(())
}

/// Refuses `path` unless it starts like an ELF shared object.
fn check_elf(path: &Path) -> Result<(), PolicyError> {
    const ET_DYN: u16 = 3;
    let mut head = [0u8; 18];
    let mut file = crate::files::open_regular(fs::File::options().read(true), path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
    let not = |why: &str| PolicyError::NotSharedLibrary { path: path.to_path_buf(), why: why.to_string() };
    let read = file.read(&mut head).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
    if read < head.len() || !head.starts_with(b"\x7fELF") {
        return Err(not("no ELF header"));
    }
    let e_type = match head[5] {
        1 => u16::from_le_bytes([head[16], head[17]]),
        2 => u16::from_be_bytes([head[16], head[17]]),
        _ => return Err(not("an ELF file of unknown byte order")),
    };
    if e_type != ET_DYN {
        return Err(not(&format!("an ELF file of type {e_type}, not a shared object")));
    }
    Ok(())
}

/// A loaded policy plugin. Cheap to keep: instances are made with [`instantiate`](Self::instantiate).
#[derive(Clone)]
pub struct PolicyPlugin {
    path: PathBuf,
    module: PolicyModRef,
    version: String,
}

impl PolicyPlugin {
    /// Finds ([`resolve`]), vets and loads the plugin `spec`.
    pub fn load(spec: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = resolve(spec.as_ref())?;
        let meta = fs::metadata(&path).map_err(|source| PolicyError::Io { path: path.clone(), source })?;
        if !meta.is_file() {
            return Err(PolicyError::NotSharedLibrary { path, why: "not a regular file".into() });
        }
        check_trusted(&path)?;
        check_elf(&path)?;
        let header = lib_header_from_path(&path).map_err(|e| library_error(&path, e))?;
        let version = header.version_strings().version.to_string();
        let module = accept::<PolicyModRef>(header).map_err(|r| refusal(&path, r))?;
        log::info!("loaded policy {} from {} (interface {version})", module.name(), path.display());
        Ok(Self { path, module, version })
    }

    /// The plugin file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.module.name().as_str()
    }

    /// The interface version the plugin was built against.
    pub fn interface_version(&self) -> &str {
        &self.version
    }

    /// A policy instance configured from the file `config`, or with no configuration.
    pub fn instantiate(&self, config: Option<&Path>) -> Result<PolicyInstance, PolicyError> {
        let text = match config {
            Some(file) => crate::files::read_to_string(file).map_err(|source| PolicyError::ConfigFile {
                policy: self.name().to_string(),
                config: file.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let object = (self.module.new())(RStr::from_str(&text)).into_result().map_err(|message| PolicyError::Config {
            policy: self.name().to_string(),
            config: config.map(Path::to_path_buf).unwrap_or_default(),
            message: message.into(),
        })?;
        Ok(PolicyInstance { plugin: self.clone(), config: config.map(Path::to_path_buf), object, started: Instant::now(), snapshot: Snapshot::default(), synced: 0, parked: HashSet::new(), hint: HintKeeper::default() })
    }
}

impl std::fmt::Debug for PolicyPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyPlugin").field("name", &self.name()).field("path", &self.path).field("version", &self.version).finish()
    }
}

fn library_error(path: &Path, e: LibraryError) -> PolicyError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => PolicyError::Open { path, message: err.to_string() },
        LibraryError::GetSymbolError { .. } => {
            PolicyError::NotAPlugin { path, why: "it exports no abi_stable root module (was it built with export_policy!?)".into() }
        }
        LibraryError::InvalidAbiHeader(found) => {
            let host = abi_stable::library::AbiHeader::VALUE;
            PolicyError::Version {
                path,
                plugin: format!("abi_stable ABI {}.{}", found.abi_major, found.abi_minor),
                host: format!("abi_stable ABI {}.{}", host.abi_major, host.abi_minor),
            }
        }
        other => PolicyError::Open { path, message: other.to_string().trim().to_string() },
    }
}

fn refusal(path: &Path, r: Refusal) -> PolicyError {
    let path = path.to_path_buf();
    match r {
        Refusal::NotAPolicy { .. } => PolicyError::NotAPlugin { path, why: r.to_string() },
        Refusal::BadVersion { version } => PolicyError::Version { path, plugin: format!("{version:?}"), host: INTERFACE_VERSION.into() },
        Refusal::Version { plugin, host } => PolicyError::Version { path, plugin, host },
        Refusal::NoLayout => PolicyError::Layout { path, summary: r.to_string(), report: String::new() },
        Refusal::Layout { ref report, .. } => PolicyError::Layout { path, report: report.clone(), summary: r.to_string() },
        Refusal::Init(why) => PolicyError::Init { path, why: format!("its root module failed to initialize: {why}") },
    }
}

/// A configured policy: what the scheduling loop asks each period.
pub struct PolicyInstance {
    plugin: PolicyPlugin,
    config: Option<PathBuf>,
    object: PolicyBox,
    started: Instant,
    /// The last snapshot handed over, rewritten in place for the next.
    snapshot: Snapshot,
    /// The generation of the table `snapshot` holds (0: none): then the next may rewrite only
    /// what that table's rebuild changed.
    synced: u64,
    /// The tasks parked when `snapshot` was written.
    parked: HashSet<TaskKey>,
    /// The hint handed with `snapshot`.
    hint: HintKeeper,
}

impl PolicyInstance {
    /// The plugin it came from.
    pub fn plugin(&self) -> &PolicyPlugin {
        &self.plugin
    }

    fn error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Policy { policy: self.plugin.name().to_string(), path: self.plugin.path.clone(), message: message.into() }
    }

    /// Ranks one snapshot. A panic in the plugin comes back as an error.
    pub fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, PolicyError> {
        match self.object.rank(snapshot).into_result() {
            Ok(decisions) => Ok(decisions.into_vec()),
            Err(message) => Err(self.error(message)),
        }
    }

    /// Ranks the tasks of `table`: [`snapshot_of`](super::snapshot_of) in (the previous
    /// period's snapshot, updated in place: only the tasks that changed, when it holds the table
    /// this one was rebuilt from) with its [`Hint`](xsched_plugin_api::Hint), [`ranking_of`]
    /// out. The snapshot's time is the time since the instance was made.
    pub fn rank_table(&mut self, table: &TaskTable, parked: &HashSet<TaskKey>, period: Duration, host_cpus: u32) -> Result<Vec<Ranked>, PolicyError> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = nanos(self.started.elapsed());
        let follows = self.synced != 0 && table.changes.base == self.synced;
        match follows.then(|| update_snapshot_changes(&mut self.snapshot, table, parked, &self.parked, now, nanos(period), host_cpus)).flatten() {
            Some(changed) => self.hint.updated(&self.snapshot, &changed),
            None => {
                update_snapshot(&mut self.snapshot, table, |k| !parked.is_empty() && parked.contains(k), now, nanos(period), host_cpus);
                self.hint.rewritten(&self.snapshot);
            }
        }
        self.synced = table.changes.generation;
        self.parked.clone_from(parked);
        let decisions = match self.object.rank_hinted(&self.snapshot, self.hint.hint()).into_result() {
            Ok(decisions) => decisions,
            Err(message) => return Err(self.error(message)),
        };
        Ok(ranking_of(&decisions, table, &self.hint.hint().runnable))
    }

    /// Re-reads the configuration file and hands it to the policy, which keeps its old
    /// configuration on error.
    pub fn reload(&mut self) -> Result<(), PolicyError> {
        let policy = self.plugin.name().to_string();
        let text = match &self.config {
            Some(file) => crate::files::read_to_string(file).map_err(|source| PolicyError::ConfigFile { policy: policy.clone(), config: file.clone(), source })?,
            None => String::new(),
        };
        self.object.reload(RStr::from_str(&text)).into_result().map_err(|message| PolicyError::Config {
            policy,
            config: self.config.clone().unwrap_or_default(),
            message: message.into(),
        })
    }
}

impl Ranker for PolicyInstance {
    fn rank(&mut self, table: &TaskTable, parked: &HashSet<TaskKey>, period: Duration, host_cpus: u32) -> Result<Vec<Ranked>, PolicyError> {
        self.rank_table(table, parked, period, host_cpus)
    }

    fn reload(&mut self) -> Result<(), PolicyError> {
        PolicyInstance::reload(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory (mode 0755) under the system's temporary directory, removed on drop.
    fn temp_dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("xsched-policy-{tag}-"))
            .permissions(fs::Permissions::from_mode(0o755))
            .tempdir()
            .expect("temp dir")
    }

    #[test]
    fn the_search_path_is_env_then_beside_the_binary_then_the_system() {
        let dirs = search_path_from(Some(OsStr::new("/a::/b")), Some(PathBuf::from("/bin-dir")));
        assert_eq!(dirs, ["/a", "/b", "/bin-dir", SYSTEM_PLUGIN_DIR].map(PathBuf::from));
        assert_eq!(search_path_from(None, None), vec![PathBuf::from(SYSTEM_PLUGIN_DIR)]);
    }

    #[test]
    fn bare_names_are_searched_and_paths_are_not() {
        let (one, two) = (temp_dir("one"), temp_dir("two"));
        fs::write(two.path().join("libfair.so"), b"x").expect("write");
        let dirs = [one.path().to_path_buf(), two.path().to_path_buf()];
        assert_eq!(resolve_in(Path::new("libfair.so"), &dirs).ok(), Some(two.path().join("libfair.so")));
        assert_eq!(resolve_in(Path::new("fair"), &dirs).ok(), Some(two.path().join("libfair.so")));
        fs::write(one.path().join("libfair.so"), b"x").expect("write");
        assert_eq!(resolve_in(Path::new("libfair.so"), &dirs).ok(), Some(one.path().join("libfair.so")), "first directory wins");
        assert_eq!(resolve_in(Path::new("./libx.so"), &dirs).ok(), Some(PathBuf::from("./libx.so")));
        let e = resolve_in(Path::new("libnone.so"), &dirs).expect_err("not found").to_string();
        assert!(e.starts_with("policy plugin libnone.so: not found in ") && e.contains(&two.path().display().to_string()), "{e}");
    }

    #[test]
    fn files_others_can_change_are_refused() {
        let dir = temp_dir("trust");
        let file = dir.path().join("libp.so");
        fs::write(&file, b"x").expect("write");
        let chmod = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
        chmod(&file, 0o644);
        assert!(check_trusted(&file).is_ok(), "{:?}", check_trusted(&file));
        chmod(&file, 0o646);
        let e = check_trusted(&file).expect_err("world-writable").to_string();
        assert!(e.contains(&file.display().to_string()) && e.contains("the file is writable by others"), "{e}");
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let e = check_trusted(&file).expect_err("world-writable dir").to_string();
        assert!(e.contains(&format!("directory {} is writable by others", dir.path().display())), "{e}");
        chmod(dir.path(), 0o1777);
        assert!(check_trusted(&file).is_ok(), "a sticky directory like /tmp is fine");
    }

    #[test]
    fn only_elf_shared_objects_pass() {
        let dir = temp_dir("elf");
        let text = dir.path().join("notes.so");
        fs::write(&text, b"just some text, long enough").expect("write");
        let e = check_elf(&text).expect_err("text").to_string();
        assert_eq!(e, format!("policy plugin {}: not a shared library (no ELF header)", text.display()));
        let mut exec = b"\x7fELF\x02\x01\x01".to_vec();
        exec.resize(16, 0);
        exec.extend([2, 0]);
        let exe = dir.path().join("prog");
        fs::write(&exe, &exec).expect("write");
        assert!(check_elf(&exe).expect_err("exec").to_string().contains("type 2, not a shared object"));
        exec[16] = 3;
        fs::write(&exe, &exec).expect("write");
        assert!(check_elf(&exe).is_ok());
    }
}
