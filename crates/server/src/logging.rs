//! Process logging for `ringkv serve`: the tracing subscriber, its `LOG_LEVEL` filter, the
//! `log` bridge (glommio logs through the `log` crate) and the size-capped `d.log` file.
//!
//! Owns the global tracing subscriber and, when a log directory is given, the file
//! `<dir>/d.log` and its rotated predecessors `d.log.1` (newest) .. `d.log.N` (oldest).
//! Installed once on the main thread before any executor starts; after that, every line is
//! written synchronously on whichever thread logs it (the main thread, the executors).
//! Must not touch anything else in the directory, the node's data directory or the
//! executors, and must never panic or stop the node because a log write failed.
//!
//! Every line goes to stderr (ANSI colours only when stderr is a terminal) and to `d.log`
//! (never coloured). `LOG_FORMAT` picks the format: `text` (the default) or `json`, one
//! object per line for log collectors. Lines logged inside the node span
//! (`node_span`, entered on every executor thread of `ringkv serve`) carry the node id:
//! `node{id=N}:` in text, `"span":{"id":N,"name":"node"}` in JSON. File writes are a plain `std::fs::File` behind a mutex: one `write(2)`
//! of one whole line into the page cache, no fsync. That can wait on the page cache but not
//! for long, and at the default level (`warn`) the volume is a few lines a minute; a
//! verbose `LOG_LEVEL` (debug, trace) costs a syscall per line on the executor that logs.
//!
//! Rotation: before a line would make `d.log` larger than `file_bytes_max`, `d.log` becomes
//! `d.log.1`, `d.log.1` becomes `d.log.2`, ..., and `d.log.N` (N = `files_kept`) is deleted.
//! A line is never split across files; a single line longer than the cap gets an empty
//! `d.log` to itself. Disk use is at most (N + 1) × `file_bytes_max` plus one line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The file name inside the log directory.
pub const FILE_NAME: &str = "d.log";
/// Default of `cluster.log_file_bytes_max`.
pub const FILE_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default of `cluster.log_files_kept`.
pub const FILES_KEPT_DEFAULT: usize = 4;

/// Where logs go besides stderr, and the size cap of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `d.log` goes here (created with its parents); `None`: stderr only.
    pub dir: Option<PathBuf>,
    /// `d.log` is rotated before it would grow past this.
    pub file_bytes_max: u64,
    /// Rotated files kept (`d.log.1` .. `d.log.N`) besides `d.log`.
    pub files_kept: usize,
}

/// Installs the process-wide subscriber: the `LOG_LEVEL` filter, the `log` bridge, stderr
/// and, with a directory, `d.log`. Errors (a bad `LOG_LEVEL`, an unwritable directory, a
/// second call) are messages for the operator; nothing is installed then.
pub fn init(opts: &LogOptions) -> Result<(), String> {
    let filter = filter(std::env::var("LOG_LEVEL").ok().as_deref())?;
    let json = format(std::env::var("LOG_FORMAT").ok().as_deref())? == Format::Json;
    let file = match &opts.dir {
        Some(dir) => Some(RotatingFile::open(
            dir,
            opts.file_bytes_max,
            opts.files_kept,
        )?),
        None => None,
    };
    let mut layers = vec![line_layer(json, io::stderr().is_terminal(), io::stderr)];
    if let Some(f) = file {
        layers.push(line_layer(json, false, f));
    }
    let installed = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

/// One output's formatter: JSON objects (with the current span, e.g. the node's) or text
/// lines, ANSI colours only when asked.
fn line_layer<W>(json: bool, ansi: bool, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(writer);
    if json {
        base.json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        base.with_ansi(ansi).boxed()
    }
}

/// Line formats (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The format for a `LOG_FORMAT` value: unset or empty means text; anything but `text`
/// or `json` is refused (never silently ignored).
pub fn format(spec: Option<&str>) -> Result<Format, String> {
    match spec.map(str::trim).unwrap_or("") {
        "" | "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        other => Err(format!(
            "LOG_FORMAT={other:?} is not a log format; use text (the default) or json"
        )),
    }
}

/// The span every executor thread of a node enters for its whole life, so each line
/// names the node. At error level: enabled whatever `LOG_LEVEL` lets through.
pub fn node_span(node_id: u64) -> tracing::Span {
    tracing::error_span!("node", id = node_id)
}

/// The filter for a `LOG_LEVEL` value: `EnvFilter` directives (`info`,
/// `warn,crate::wal=debug`, ...); unset or empty means `warn`. Unlike `EnvFilter`, a bare
/// word that is not a level is refused rather than read as a target name (`LOG_LEVEL=dbug`
/// would otherwise silently log nothing); write `target=level` for a target.
pub fn filter(spec: Option<&str>) -> Result<EnvFilter, String> {
    let spec = spec.unwrap_or("").trim();
    let bad = |why: String| {
        Err(format!(
            "LOG_LEVEL={spec:?}: {why}; use a level (error, warn, info, debug, trace, off) or \
             directives like \"warn,crate::wal=debug\""
        ))
    };
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && !d.contains('[') && d.parse::<LevelFilter>().is_err() {
            return bad(format!(
                "{d:?} is not a level (for a target write \"{d}=LEVEL\")"
            ));
        }
    }
    match EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse(spec)
    {
        Ok(f) => Ok(f),
        Err(e) => bad(e.to_string()),
    }
}

/// `d.log` with size-capped rotation; a `MakeWriter` whose writers hand over whole lines.
pub struct RotatingFile {
    inner: Mutex<FileState>,
}

struct FileState {
    path: PathBuf,
    /// `None` after a failed rotation or reopen; reopening is tried at the next line.
    file: Option<File>,
    /// Bytes in `d.log`.
    /// Invariant: at most `bytes_max`, unless the file holds a single line longer than that.
    len: u64,
    bytes_max: u64,
    files_kept: usize,
    /// A write failure was reported on stderr and nothing has succeeded since: say it once.
    failing: bool,
}

impl RotatingFile {
    /// Opens (appends to) `<dir>/d.log`, creating `dir` and its parents.
    pub fn open(dir: &Path, bytes_max: u64, files_kept: usize) -> Result<Self, String> {
        assert!(bytes_max > 0 && files_kept > 0, "validated by the config");
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let file =
            open_append(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
            .len();
        Ok(Self {
            inner: Mutex::new(FileState {
                path,
                file: Some(file),
                len,
                bytes_max,
                files_kept,
                failing: false,
            }),
        })
    }

    /// Appends one record (whole lines), rotating first when it would pass the cap.
    /// Failures are reported on stderr (once until the next success), never returned.
    pub fn append(&self, record: &[u8]) {
        if record.is_empty() {
            return;
        }
        // A thread that panicked while logging left nothing half-done worth refusing.
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match s.append(record) {
            Ok(()) => s.failing = false,
            Err(e) => {
                if !s.failing {
                    s.failing = true;
                    let _ = writeln!(
                        io::stderr(),
                        "ringkv: cannot write the log file {}: {e} (logging to stderr only \
                         until it works again)",
                        s.path.display()
                    );
                }
            }
        }
    }
}

impl FileState {
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        let n = record.len() as u64;
        if self.file.is_none() || (self.len > 0 && self.len + n > self.bytes_max) {
            self.rotate_or_reopen()?;
        }
        let file = self.file.as_mut().expect("opened above");
        let r = file.write_all(record);
        // Count what may have landed, so a short write still moves towards rotation.
        self.len += n;
        r
    }

    /// Shifts `d.log` -> `d.log.1` -> ... and opens a new `d.log`; when the file was lost
    /// (a failure earlier) only reopens it, rotating if it is already full.
    fn rotate_or_reopen(&mut self) -> io::Result<()> {
        let full = match &self.file {
            Some(_) => true,
            None => fs::metadata(&self.path).map_or(0, |m| m.len()) >= self.bytes_max,
        };
        self.file = None;
        if full {
            let numbered = |i: usize| {
                let mut p = self.path.clone().into_os_string();
                p.push(format!(".{i}"));
                PathBuf::from(p)
            };
            match fs::remove_file(numbered(self.files_kept)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for i in (1..self.files_kept).rev() {
                match fs::rename(numbered(i), numbered(i + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            match fs::rename(&self.path, numbered(1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let file = open_append(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One event's bytes, handed to the file whole when the formatter drops it.
pub struct RecordWriter<'a> {
    file: &'a RotatingFile,
    buf: Vec<u8>,
}

impl Write for RecordWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        self.file.append(&self.buf);
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RecordWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RecordWriter {
            file: self,
            buf: Vec::with_capacity(256),
        }
    }
}
