//! Finding a kernel and its modules in an unpacked root (an image, or a
//! kernel package unpacked to a scratch directory), and computing the
//! module load order from the modules' own `.modinfo` `depends=`: no
//! hard-coded list and no `modules.dep` (a package ships none; depmod
//! writes it at install time).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::compress::{decompress_bounded, Codec};
use crate::error::BootError;
use crate::modinfo::{parse_module, ModInfo};

/// Module files indexed in one kernel (bookworm has ~4,000).
pub const MODULE_FILES_MAX: usize = 100_000;
/// Directory depth walked under lib/modules/<version>.
pub const MODULE_DIR_DEPTH_MAX: usize = 16;
/// Modules in one load plan (the NFS-root set is ~20).
pub const PLAN_MODULES_MAX: usize = 256;
/// One decompressed module (the biggest in bookworm is ~15 MB).
pub const MODULE_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    pub version: String,
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
}

impl KernelTree {
    /// The kernel in `root`: `boot/vmlinuz-<v>` with `lib/modules/<v>` (or
    /// `usr/lib/modules/<v>`). With several, the highest version string in
    /// byte order wins, so the choice does not depend on directory order.
    pub fn locate(root: &Path) -> Result<KernelTree, BootError> {
        let boot = root.join("boot");
        let mut versions = BTreeSet::new();
        if let Ok(entries) = fs::read_dir(&boot) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(version) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
                    versions.insert(version.to_string());
                }
            }
        }
        versions
            .into_iter()
            .rev()
            .find_map(|version| {
                ["lib/modules", "usr/lib/modules"]
                    .iter()
                    .map(|dir| root.join(dir).join(&version))
                    .find(|dir| dir.is_dir())
                    .map(|modules_dir| KernelTree {
                        vmlinuz: boot.join(format!("vmlinuz-{version}")),
                        version,
                        modules_dir,
                    })
            })
            .ok_or_else(|| BootError::NoKernelInRoot {
                root: root.to_path_buf(),
            })
    }
}

/// A module ready to go into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedModule {
    pub info: ModInfo,
    /// Path relative to the modules directory, as shipped (maybe `.ko.xz`).
    pub source: PathBuf,
    /// Uncompressed ELF object (busybox insmod takes it as is).
    pub object: Vec<u8>,
}

/// Module name -> file, from file names alone (the name in `.modinfo` is
/// checked when a module is loaded into a plan).
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    pub version: String,
    dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
}

/// `virtio-net` and `virtio_net` are the same module to the kernel.
pub fn canonical_module_name(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    pub fn scan(tree: &KernelTree) -> Result<ModuleIndex, BootError> {
        let mut index = ModuleIndex {
            version: tree.version.clone(),
            dir: tree.modules_dir.clone(),
            files: BTreeMap::new(),
        };
        index.walk(Path::new(""), 0)?;
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn contains(&self, module: &str) -> bool {
        self.files.contains_key(&canonical_module_name(module))
    }

    fn walk(&mut self, relative: &Path, depth: usize) -> Result<(), BootError> {
        if depth > MODULE_DIR_DEPTH_MAX {
            return Ok(());
        }
        let dir = self.dir.join(relative);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(BootError::io(&dir))?
            .flatten()
            .collect();
        // Sorted, so that when two directories hold the same module name the
        // same one always wins.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = relative.join(name);
            let file_type = entry.file_type().map_err(BootError::io(entry.path()))?;
            if file_type.is_dir() {
                self.walk(&path, depth + 1)?;
            } else if let Some(stem) = Codec::from_name(name).1.strip_suffix(".ko") {
                if self.files.len() == MODULE_FILES_MAX {
                    return Err(BootError::TooManyModules {
                        module: stem.to_string(),
                        modules_max: MODULE_FILES_MAX,
                    });
                }
                self.files
                    .entry(canonical_module_name(stem))
                    .or_insert(path);
            }
        }
        Ok(())
    }

    /// Reads, decompresses and parses one module.
    pub fn load(&self, module: &str) -> Result<PlannedModule, BootError> {
        let name = canonical_module_name(module);
        let source = self
            .files
            .get(&name)
            .ok_or_else(|| BootError::MissingModule {
                version: self.version.clone(),
                module: name.clone(),
            })?;
        let path = self.dir.join(source);
        let raw = fs::read(&path).map_err(BootError::io(&path))?;
        let file_name = source.to_string_lossy();
        let (codec, _) = Codec::from_name(&file_name);
        let object = decompress_bounded(codec, &raw, MODULE_BYTES_MAX)
            .map_err(BootError::io(&path))?
            .ok_or_else(|| BootError::ModuleTooLarge {
                module: name.clone(),
                bytes_max: MODULE_BYTES_MAX,
            })?;
        let info = parse_module(&object).map_err(|source| BootError::Format {
            file: file_name.to_string(),
            source,
        })?;
        if canonical_module_name(&info.name) != name {
            return Err(BootError::ModuleNameMismatch {
                module: name,
                found: info.name,
            });
        }
        Ok(PlannedModule {
            info,
            source: source.clone(),
            object,
        })
    }

    /// Load order for `requested`: every module after all of its
    /// `depends=`. Depth-first, requests in the given order and each
    /// module's dependencies in the order it lists them, so the plan is a
    /// pure function of the kernel and the request.
    pub fn plan(&self, requested: &[String]) -> Result<Vec<PlannedModule>, BootError> {
        let mut planner = Planner {
            index: self,
            done: BTreeMap::new(),
            order: Vec::new(),
            path: Vec::new(),
        };
        for module in requested {
            planner.visit(&canonical_module_name(module))?;
        }
        Ok(planner.order)
    }
}

struct Planner<'a> {
    index: &'a ModuleIndex,
    done: BTreeMap<String, ()>,
    order: Vec<PlannedModule>,
    /// Modules being visited, outermost first: a repeat is a cycle.
    path: Vec<String>,
}

impl Planner<'_> {
    fn visit(&mut self, name: &str) -> Result<(), BootError> {
        if self.done.contains_key(name) {
            return Ok(());
        }
        if self.path.iter().any(|p| p == name) {
            return Err(BootError::DependencyCycle {
                module: name.to_string(),
                cycle: format!("{} -> {name}", self.path.join(" -> ")),
            });
        }
        if self.order.len() + self.path.len() >= PLAN_MODULES_MAX {
            return Err(BootError::TooManyModules {
                module: name.to_string(),
                modules_max: PLAN_MODULES_MAX,
            });
        }
        let module = self.index.load(name)?;
        self.path.push(name.to_string());
        for dependency in &module.info.depends {
            self.visit(dependency)?;
        }
        self.path.pop();
        self.done.insert(name.to_string(), ());
        self.order.push(module);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modinfo::tests::build_module;

    pub(crate) fn fake_kernel(root: &Path, modules: &[(&str, &str)]) {
        let version = "6.1.0-test-amd64";
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join(format!("boot/vmlinuz-{version}")), b"bzImage").unwrap();
        let dir = root.join(format!("lib/modules/{version}/kernel/drivers"));
        fs::create_dir_all(&dir).unwrap();
        for (name, depends) in modules {
            let info = format!("name={name}\0depends={depends}\0");
            fs::write(
                dir.join(format!("{name}.ko")),
                build_module(info.as_bytes()),
            )
            .unwrap();
        }
    }

    fn names(plan: &[PlannedModule]) -> Vec<&str> {
        plan.iter().map(|m| m.info.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first_in_listed_order() {
        let root = tempfile::tempdir().unwrap();
        fake_kernel(
            root.path(),
            &[("a", "b,c"), ("b", "c"), ("c", ""), ("d", "c")],
        );
        let tree = KernelTree::locate(root.path()).unwrap();
        let index = ModuleIndex::scan(&tree).unwrap();
        assert_eq!(index.len(), 4);
        let plan = index.plan(&["a".into(), "d".into()]).unwrap();
        assert_eq!(names(&plan), ["c", "b", "a", "d"]);
    }

    #[test]
    fn missing_module_and_cycle_are_named() {
        let root = tempfile::tempdir().unwrap();
        fake_kernel(root.path(), &[("a", "b"), ("b", "a"), ("c", "gone")]);
        let index = ModuleIndex::scan(&KernelTree::locate(root.path()).unwrap()).unwrap();
        let err = index.plan(&["nfsv3".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel 6.1.0-test-amd64 has no nfsv3 module"
        );
        let err = index.plan(&["c".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel 6.1.0-test-amd64 has no gone module"
        );
        let err = index.plan(&["a".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "module a depends on itself through a -> b -> a"
        );
    }

    #[test]
    fn compressed_modules_are_indexed_and_decompressed() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        fake_kernel(root.path(), &[]);
        let object = build_module(b"name=e1000e\0depends=\0");
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&object).unwrap();
        let dir = root
            .path()
            .join("lib/modules/6.1.0-test-amd64/kernel/drivers");
        fs::write(dir.join("e1000e.ko.xz"), xz.finish().unwrap()).unwrap();
        let index = ModuleIndex::scan(&KernelTree::locate(root.path()).unwrap()).unwrap();
        let plan = index.plan(&["e1000e".into()]).unwrap();
        assert_eq!(plan[0].object, object);
        assert_eq!(plan[0].source, Path::new("kernel/drivers/e1000e.ko.xz"));
    }

    #[test]
    fn root_without_kernel_is_named() {
        let root = tempfile::tempdir().unwrap();
        let err = KernelTree::locate(root.path()).unwrap_err();
        assert!(err.to_string().starts_with("no kernel in "), "{err}");
    }
}
