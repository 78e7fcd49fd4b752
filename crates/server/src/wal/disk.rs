//! The file layer under the WAL: real O_DIRECT files on io_uring, or a simulated disk.
//!
//! `DmaDisk` is what the server runs: glommio `DmaFile`s on the executor that owns the WAL
//! (the raft core). With the `crash-sim` feature its writes are held in memory and reach
//! the file only together with the next fdatasync, so kill -9 behaves like a power cut.
//! `SimDisk` is a deterministic in-memory disk for crash tests: it keeps what is durable
//! apart from what is merely written, and `crash` keeps a random, possibly torn, part of
//! the latter. It can also fail fsyncs and run out of space on request.
//!
//! Single-threaded by design (thread-per-core), hence `async fn` in traits without `Send`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringkv_rng::Rng;

use super::format::BLOCK;

/// A directory tree of files, as the WAL needs it.
#[allow(async_fn_in_trait)]
pub trait Disk: Clone + 'static {
    type File: DiskFile + 'static;
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files directly in `dir` (empty if it does not exist).
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens for reading and writing; creates an empty file when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file. Writes take block-aligned buffers at block-aligned offsets.
#[allow(async_fn_in_trait)]
pub trait DiskFile {
    type Buf: DerefMut<Target = [u8]> + 'static;
    /// A buffer of `len` bytes (a multiple of 4096) suitable for `write_at`.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// Writes the whole buffer at `pos` or fails.
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    async fn fdatasync(&self) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    /// Reserves space for `len` bytes (fallocate); fails with ENOSPC when the disk is full.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn close(self) -> io::Result<()>;
}

/// Whether an I/O error means "disk full" (refuse writes, keep serving reads).
pub fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc_enospc()) || e.kind() == io::ErrorKind::StorageFull
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

// ---------------------------------------------------------------------------------------
// Real files: glommio DmaFile (O_DIRECT on io_uring).

/// The production disk. Create one per executor with `DmaDisk::new(probe_dir)` before
/// opening any other `DmaFile` on that executor (see `new`).
#[derive(Clone, Debug)]
pub struct DmaDisk {
    /// `crash-sim`: how long an fdatasync holds its writes in memory before it starts
    /// (a slow disk's sync), widening the window a kill -9 loses them in.
    sync_delay: std::time::Duration,
}

impl DmaDisk {
    /// Works around glommio's polled-I/O probe (../shared/notes/platform.md): the first
    /// `DmaFile` an executor opens decides, for the whole run, whether it uses the polled
    /// io_uring ring. An empty file opened read+write wrongly enables it on this kind of
    /// disk, after which every 4 KiB append takes ~4 ms and reads fail with EOPNOTSUPP.
    /// So the first file opened is a small NON-EMPTY one, read-only.
    pub async fn new(probe_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(probe_dir)?;
        let probe = probe_dir.join(".io-probe");
        if std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0) == 0 {
            std::fs::write(&probe, [0u8; BLOCK])?;
        }
        let f = glommio::io::DmaFile::open(&probe)
            .await
            .map_err(io::Error::from)?;
        f.close().await.map_err(io::Error::from)?;
        Ok(Self {
            sync_delay: std::time::Duration::ZERO,
        })
    }

    /// `crash-sim` builds: every fdatasync first waits `d` with its writes still only in
    /// memory (the fault campaign's slow disk). Other builds ignore it.
    pub fn with_sync_delay(mut self, d: std::time::Duration) -> Self {
        self.sync_delay = d;
        self
    }
}

/// glommio resolves some paths against a directory descriptor, not the working
/// directory: hand it absolute paths.
fn abs(p: &Path) -> io::Result<PathBuf> {
    std::path::absolute(p)
}

/// An aligned DMA buffer as a byte slice.
pub struct DmaBuf(glommio::io::DmaBuffer);

impl Deref for DmaBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

pub struct DmaDiskFile {
    file: glommio::io::DmaFile,
    /// `crash-sim`: writes not yet covered by an fdatasync, held back from the file, each
    /// with its issue number (a sync covers only the writes issued before it).
    #[cfg(feature = "crash-sim")]
    held: RefCell<Vec<(u64, DmaBuf, u64)>>,
    #[cfg(feature = "crash-sim")]
    writes_issued: std::cell::Cell<u64>,
    #[cfg(feature = "crash-sim")]
    sync_delay: std::time::Duration,
}

impl Disk for DmaDisk {
    type File = DmaDiskFile;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for ent in rd {
            out.push(ent?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaDiskFile> {
        let path = &abs(path)?;
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DmaDiskFile {
            file,
            #[cfg(feature = "crash-sim")]
            held: RefCell::new(Vec::new()),
            #[cfg(feature = "crash-sim")]
            writes_issued: std::cell::Cell::new(0),
            #[cfg(feature = "crash-sim")]
            sync_delay: self.sync_delay,
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(abs(path)?)
            .await
            .map_err(io::Error::from)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(abs(from)?, abs(to)?)
            .await
            .map_err(io::Error::from)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = glommio::io::Directory::open(abs(dir)?)
            .await
            .map_err(io::Error::from)?;
        d.sync().await.map_err(io::Error::from)?;
        d.close().await.map_err(io::Error::from)
    }
}

impl DmaDiskFile {
    async fn write_now(&self, buf: DmaBuf, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let n = self
            .file
            .write_at(buf.0, pos)
            .await
            .map_err(io::Error::from)?;
        if n != len {
            return Err(io::Error::other(format!(
                "short write: {n} of {len} bytes at offset {pos}"
            )));
        }
        Ok(())
    }
}

impl DiskFile for DmaDiskFile {
    type Buf = DmaBuf;

    fn alloc(&self, len: usize) -> DmaBuf {
        assert_eq!(len % BLOCK, 0, "unaligned buffer");
        DmaBuf(self.file.alloc_dma_buffer(len))
    }

    #[cfg(not(feature = "crash-sim"))]
    async fn write_at(&self, buf: DmaBuf, pos: u64) -> io::Result<()> {
        self.write_now(buf, pos).await
    }

    #[cfg(feature = "crash-sim")]
    async fn write_at(&self, buf: DmaBuf, pos: u64) -> io::Result<()> {
        // Power-cut model: the bytes exist only in this process until a sync carries them.
        let n = self.writes_issued.get() + 1;
        self.writes_issued.set(n);
        self.held.borrow_mut().push((n, buf, pos));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = self.file.read_at(pos, len).await.map_err(io::Error::from)?;
        #[allow(unused_mut)]
        let mut v = r.to_vec();
        #[cfg(feature = "crash-sim")]
        {
            // Held writes are what this process sees, as a page cache would show them.
            let held = self.held.borrow();
            let end = held
                .iter()
                .map(|(_, b, at)| at + b.len() as u64)
                .max()
                .unwrap_or(0)
                .min(pos + len as u64);
            if end > pos + v.len() as u64 {
                v.resize((end - pos) as usize, 0);
            }
            for (_, b, at) in held.iter() {
                overlay(&mut v, pos, b, *at);
            }
        }
        Ok(v)
    }

    async fn fdatasync(&self) -> io::Result<()> {
        #[cfg(feature = "crash-sim")]
        {
            // As a real fdatasync: it covers the writes issued before it, not those issued
            // while it runs (with a sync delay, a later write stays exposed for the whole
            // delay of its own sync).
            let covers = self.writes_issued.get();
            if !self.sync_delay.is_zero() {
                glommio::timer::sleep(self.sync_delay).await;
            }
            let mine: Vec<_> = {
                let mut held = self.held.borrow_mut();
                let (mine, later) = std::mem::take(&mut *held)
                    .into_iter()
                    .partition(|(n, _, _)| *n <= covers);
                *held = later;
                mine
            };
            for (_, b, at) in mine {
                self.write_now(b, at).await?;
            }
        }
        self.file.fdatasync().await.map_err(io::Error::from)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(io::Error::from)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(io::Error::from)
    }

    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(io::Error::from)
    }
}

#[cfg(feature = "crash-sim")]
/// Copies the part of `src` (written at `src_at`) that overlaps `dst` (read at `dst_at`).
fn overlay(dst: &mut [u8], dst_at: u64, src: &[u8], src_at: u64) {
    let lo = dst_at.max(src_at);
    let hi = (dst_at + dst.len() as u64).min(src_at + src.len() as u64);
    if lo < hi {
        let d = (lo - dst_at) as usize;
        let s = (lo - src_at) as usize;
        let n = (hi - lo) as usize;
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

// ---------------------------------------------------------------------------------------
// Simulated disk for crash tests.

/// Sector size of the simulated disk: a crash tears a write at sector boundaries.
const SECTOR: usize = 512;

#[derive(Default)]
struct Inode {
    /// Contents as of the last completed fdatasync.
    durable: Vec<u8>,
    /// Contents as the process sees them.
    current: Vec<u8>,
    /// Writes since the last sync, in order (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
}

#[derive(Default)]
struct SimState {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Names as the process sees them.
    names: BTreeMap<PathBuf, u64>,
    /// Names as of the last directory sync.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Name changes since the last directory sync, in order.
    pending_dir: Vec<DirOp>,
    dirs: std::collections::BTreeSet<PathBuf>,
    /// Bytes allowed in all files together (`None`: unlimited).
    capacity_bytes: Option<u64>,
    fail_fsync: bool,
    fsyncs: u64,
    /// Bumped by a crash: handles from before it fail (their process is gone).
    epoch: u64,
    /// An armed crash: after this many more operations, with this generator.
    armed: Option<(u64, Rng)>,
    fired: bool,
}

impl SimState {
    fn crash(&mut self, rng: &mut Rng) {
        let st = self;
        st.epoch += 1;
        let keep = rng.below(st.pending_dir.len() as u64 + 1) as usize;
        let mut names = st.durable_names.clone();
        for op in &st.pending_dir[..keep] {
            match op {
                DirOp::Link(p, ino) => {
                    names.insert(p.clone(), *ino);
                }
                DirOp::Unlink(p) => {
                    names.remove(p);
                }
            }
        }
        for ino in st.inodes.values_mut() {
            let mut data = std::mem::take(&mut ino.durable);
            for (at, bytes) in std::mem::take(&mut ino.pending) {
                let at = at as usize;
                match rng.below(3) {
                    0 => {}
                    1 => write_into(&mut data, at, &bytes),
                    _ => {
                        for s in (0..bytes.len()).step_by(SECTOR) {
                            if rng.below(2) == 0 {
                                let end = (s + SECTOR).min(bytes.len());
                                write_into(&mut data, at + s, &bytes[s..end]);
                            }
                        }
                    }
                }
            }
            ino.current = data.clone();
            ino.durable = data;
        }
        st.names = names.clone();
        st.durable_names = names;
        st.pending_dir.clear();
        let live: std::collections::BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|k, _| live.contains(k));
    }

    /// ENOSPC if growing inode `ino` to `end` bytes would exceed the capacity.
    fn ensure_room(&self, ino: u64, end: u64) -> io::Result<()> {
        let grow = end.saturating_sub(self.inodes[&ino].current.len() as u64);
        match self.capacity_bytes {
            Some(cap) if self.used_bytes() + grow > cap => Err(no_space()),
            _ => Ok(()),
        }
    }

    /// Counts one operation toward an armed crash; fires it when due.
    fn tick(&mut self) {
        if let Some((n, rng)) = &mut self.armed {
            if *n == 0 {
                let mut rng = rng.clone();
                self.armed = None;
                self.fired = true;
                self.crash(&mut rng);
            } else {
                *n -= 1;
            }
        }
    }

    /// Bytes held by files that still have a name (removed files free their space).
    fn used_bytes(&self) -> u64 {
        let live: std::collections::BTreeSet<u64> = self.names.values().copied().collect();
        live.iter()
            .map(|i| self.inodes[i].current.len() as u64)
            .sum()
    }
}

/// A deterministic in-memory disk with power-cut crashes and injected faults.
#[derive(Default)]
pub struct SimDisk {
    st: Rc<RefCell<SimState>>,
    epoch: u64,
}

impl Clone for SimDisk {
    /// A clone is a handle of the process running now (the current epoch).
    fn clone(&self) -> Self {
        Self {
            st: self.st.clone(),
            epoch: self.st.borrow().epoch,
        }
    }
}

/// Returns `Pending` once: lets other tasks run between a write and its sync, as a real
/// disk does, so crashes find writes in flight.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated disk: the process crashed (stale handle)")
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Power cut: names keep the last directory sync plus a random prefix of later changes;
    /// each file keeps its durable bytes plus, for each later write in order, nothing, all
    /// of it or a torn part of it (whole sectors). Earlier handles must not be used again.
    pub fn crash(&self, rng: &mut Rng) {
        self.st.borrow_mut().crash(rng);
    }

    /// Crashes by itself at the `ops`-th disk operation from now (a write, sync, open,
    /// rename, removal or allocation): crash points inside the WAL's own sequences.
    pub fn arm_crash(&self, ops: u64, seed: u64) {
        let mut st = self.st.borrow_mut();
        st.armed = Some((ops, Rng::new(seed)));
        st.fired = false;
    }

    /// Cancels an armed crash that has not happened.
    pub fn disarm(&self) {
        let mut st = self.st.borrow_mut();
        st.armed = None;
        st.fired = false;
    }

    /// Whether an armed crash has happened.
    pub fn crashed_since_armed(&self) -> bool {
        self.st.borrow().fired
    }

    /// Clean stop: everything written survives (what kill -9 without a power cut keeps).
    pub fn crash_keep_all(&self) {
        let mut st = self.st.borrow_mut();
        st.durable_names = st.names.clone();
        st.pending_dir.clear();
        for ino in st.inodes.values_mut() {
            ino.durable = ino.current.clone();
            ino.pending.clear();
        }
    }

    /// Every later fdatasync fails with EIO.
    pub fn fail_fsync(&self, on: bool) {
        self.st.borrow_mut().fail_fsync = on;
    }

    /// Limits the bytes all files may hold (ENOSPC beyond).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.st.borrow_mut().capacity_bytes = bytes;
    }

    pub fn used_bytes(&self) -> u64 {
        self.st.borrow().used_bytes()
    }

    pub fn fsyncs(&self) -> u64 {
        self.st.borrow().fsyncs
    }

    /// The bytes a file holds now (test inspection and damage).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.st.borrow();
        let ino = st.names.get(path)?;
        Some(st.inodes[ino].current.clone())
    }

    /// Overwrites bytes of a file, durably (simulates damage at rest).
    pub fn damage(&self, path: &Path, at: usize, bytes: &[u8]) {
        let mut st = self.st.borrow_mut();
        let ino = *st.names.get(path).expect("file exists");
        let i = st.inodes.get_mut(&ino).expect("inode");
        write_into(&mut i.current, at, bytes);
        write_into(&mut i.durable, at, bytes);
    }
}

fn write_into(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if data.len() < at + bytes.len() {
        data.resize(at + bytes.len(), 0);
    }
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc_enospc())
}

pub struct SimFile {
    st: Rc<RefCell<SimState>>,
    ino: u64,
    epoch: u64,
}

/// The state, for a handle of process `epoch`: counts the operation toward an armed
/// crash and fails if that process has crashed.
fn live_state(st: &RefCell<SimState>, epoch: u64) -> io::Result<std::cell::RefMut<'_, SimState>> {
    let mut st = st.borrow_mut();
    st.tick();
    if st.epoch != epoch {
        return Err(crashed());
    }
    Ok(st)
}

impl SimDisk {
    fn live(&self) -> io::Result<std::cell::RefMut<'_, SimState>> {
        live_state(&self.st, self.epoch)
    }
}

impl SimFile {
    fn apply_write(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        let mut st = self.live()?;
        st.ensure_room(self.ino, pos + buf.len() as u64)?;
        let ino = st.inodes.get_mut(&self.ino).expect("inode");
        write_into(&mut ino.current, pos as usize, &buf);
        ino.pending.push((pos, buf));
        Ok(())
    }

    fn live(&self) -> io::Result<std::cell::RefMut<'_, SimState>> {
        live_state(&self.st, self.epoch)
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.live()?;
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect())
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut st = self.live()?;
        let epoch = self.epoch;
        if let Some(&ino) = st.names.get(path) {
            return Ok(SimFile {
                st: self.st.clone(),
                ino,
                epoch,
            });
        }
        let parent = path.parent().expect("path has a parent");
        if !create || !st.dirs.contains(parent) {
            return Err(not_found(path));
        }
        st.next_inode += 1;
        let ino = st.next_inode;
        st.inodes.insert(ino, Inode::default());
        st.names.insert(path.to_path_buf(), ino);
        st.pending_dir.push(DirOp::Link(path.to_path_buf(), ino));
        Ok(SimFile {
            st: self.st.clone(),
            ino,
            epoch,
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        st.pending_dir.push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), ino);
        // One journal transaction: both changes land together or not at all.
        st.pending_dir.push(DirOp::Unlink(from.to_path_buf()));
        let n = st.pending_dir.len();
        st.pending_dir
            .insert(n - 1, DirOp::Link(to.to_path_buf(), ino));
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        YieldOnce(false).await;
        let mut st = self.live()?;
        if st.fail_fsync {
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        st.fsyncs += 1;
        // Simplification: a directory sync commits every pending name change (one journal).
        let _ = dir;
        st.durable_names = st.names.clone();
        st.pending_dir.clear();
        Ok(())
    }
}

impl DiskFile for SimFile {
    type Buf = Vec<u8>;

    fn alloc(&self, len: usize) -> Vec<u8> {
        assert_eq!(len % BLOCK, 0, "unaligned buffer");
        vec![0; len]
    }

    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        assert_eq!(pos % BLOCK as u64, 0, "unaligned O_DIRECT write at {pos}");
        self.apply_write(buf, pos)?;
        YieldOnce(false).await;
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let st = self.live()?;
        let data = &st.inodes[&self.ino].current;
        let lo = (pos as usize).min(data.len());
        let hi = (pos as usize + len).min(data.len());
        Ok(data[lo..hi].to_vec())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        YieldOnce(false).await;
        let mut st = self.live()?;
        if st.fail_fsync {
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        st.fsyncs += 1;
        let ino = st.inodes.get_mut(&self.ino).expect("inode");
        ino.durable = ino.current.clone();
        ino.pending.clear();
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.live()?.inodes[&self.ino].current.len() as u64)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        let mut st = self.live()?;
        st.ensure_room(self.ino, len)?;
        let ino = st.inodes.get_mut(&self.ino).expect("inode");
        if ino.current.len() < len as usize {
            // Allocated blocks read as zero; the size change is metadata (durable at once
            // here; a crash can only lose data writes).
            ino.current.resize(len as usize, 0);
            ino.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}
