//! The boot tree — boot loaders, and each image's kernel and initramfs —
//! lives in the store as the image named [`BOOT_IMAGE`], so it is replicated
//! and versioned like every other image. TFTP serves it from there; `ironroot
//! boot import-kernel` adds to it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ironroot_store::model::NodeKind;
use ironroot_store::store::Store;
use ironroot_tftp::source::{FileSource, OpenError, OpenFile};
use ironroot_tftp::TftpPath;

use crate::storefs::SharedStore;

/// The image that holds the boot tree.
pub const BOOT_IMAGE: &str = "boot";
/// Bytes of boot files kept in memory for concurrent transfers at most.
pub const CACHE_BYTES_MAX: usize = 512 << 20;
/// Largest boot file served (kernels and initramfs are tens of MB).
pub const FILE_BYTES_MAX: u64 = 1 << 30;

/// The file id and size of `path` in the current boot tree.
pub fn lookup(store: &Store, path: &[String]) -> Option<(u64, u64)> {
    let generation = store.state().current(BOOT_IMAGE)?;
    let mut node = generation.root.clone();
    for component in path {
        let NodeKind::Dir { tree } = &node.kind else {
            return None;
        };
        let tree = store.objects().get_tree(tree).ok()?;
        node = tree.entries.get(component.as_bytes())?.clone();
    }
    match node.kind {
        NodeKind::File { size, .. } => Some((node.file_id, size)),
        _ => None,
    }
}

/// TFTP's view of the boot tree in the store.
pub struct StoreBootSource {
    store: SharedStore,
    cache: Mutex<BTreeMap<u64, Arc<[u8]>>>,
}

impl StoreBootSource {
    pub fn new(store: SharedStore) -> StoreBootSource {
        StoreBootSource {
            store,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    fn bytes(&self, file_id: u64, size: u64) -> Option<Arc<[u8]>> {
        if let Some(bytes) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&file_id)
        {
            return Some(Arc::clone(bytes));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).ok()?);
        {
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            while (bytes.len() as u64) < size {
                let part = store
                    .read_file(
                        file_id,
                        bytes.len() as u64,
                        ironroot_store::view::READ_LEN_MAX,
                    )
                    .ok()?;
                if part.is_empty() {
                    break;
                }
                bytes.extend_from_slice(&part);
            }
        }
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        while cache.values().map(|b| b.len()).sum::<usize>() + bytes.len() > CACHE_BYTES_MAX {
            if cache.pop_first().is_none() {
                break;
            }
        }
        cache.insert(file_id, Arc::clone(&bytes));
        Some(bytes)
    }
}

impl FileSource for StoreBootSource {
    fn open(&self, path: &TftpPath, _client: IpAddr) -> Result<OpenFile, OpenError> {
        let components: Vec<String> = path.components().to_vec();
        let found = {
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            lookup(&store, &components)
        };
        let not_found = || OpenError::NotFound { path: path.clone() };
        let (file_id, size) = found
            .filter(|(_, size)| *size <= FILE_BYTES_MAX)
            .ok_or_else(not_found)?;
        let bytes = self.bytes(file_id, size).ok_or_else(not_found)?;
        Ok(OpenFile::from_bytes(bytes))
    }
}

/// Why `boot import-kernel` failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportKernelError {
    #[error("no image named {0}; import it first")]
    UnknownImage(String),
    #[error("{0}")]
    Boot(#[from] ironroot_boot::BootError),
    #[error("exporting {what}: {message}")]
    Export { what: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Build `image`'s kernel and initramfs from `source` into a copy of the
/// current boot tree (plus the boot loaders), ready to import as the next
/// generation of [`BOOT_IMAGE`]. Slow (unpacks packages): run it off the
/// async workers.
pub fn stage_kernel(
    store: &SharedStore,
    image: &str,
    deb: Option<std::path::PathBuf>,
    from_image: bool,
    dir: &std::path::Path,
) -> Result<Vec<String>, ImportKernelError> {
    use ironroot_boot::import::{import_kernel, ImportOptions, KernelSource};
    let image_root = dir.join("image-root");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        let generation = store
            .state()
            .current(image)
            .ok_or_else(|| ImportKernelError::UnknownImage(image.to_owned()))?;
        let export = |what: &str, root: &ironroot_store::model::Node, dest: &std::path::Path| {
            ironroot_store::export::export_tree(store.objects(), root, dest).map_err(|e| {
                ImportKernelError::Export {
                    what: what.to_owned(),
                    message: e.to_string(),
                }
            })
        };
        export(image, &generation.root, &image_root)?;
        if let Some(boot) = store.state().current(BOOT_IMAGE) {
            export(BOOT_IMAGE, &boot.root, &tree)?;
        }
    }
    let cache = ironroot_boot::packages::default_cache();
    let mut options = ImportOptions::from_cache(&cache)?;
    options.image_root = Some(image_root.clone());
    let source = match (deb, from_image) {
        (Some(deb), _) => KernelSource::Deb(deb),
        (None, true) => KernelSource::ImageRoot(image_root),
        // Neither: the current bookworm kernel package, fetched (and
        // checksummed) into the package cache.
        (None, false) => KernelSource::Deb(cache.kernel()?.path),
    };
    let artifacts = import_kernel(&source, &options)?;
    let mut written: Vec<String> = artifacts.write_to_tree(&tree, image)?.into_keys().collect();
    written.extend(ironroot_boot::layout::install_boot_loaders(&cache, &tree)?.into_keys());
    Ok(written)
}
