//! The package manifest: what is in a Slurm view, read from Spack's real
//! `spack.lock`, plus the cell it was built for; and an SPDX SBOM of the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// spack.lock (lockfile v5/v6, specfile v4/v5): only the fields we read.

#[derive(Debug, Deserialize)]
struct Lockfile {
    #[serde(rename = "_meta")]
    meta: LockMeta,
    roots: Vec<LockRoot>,
    concrete_specs: BTreeMap<String, LockSpec>,
}

#[derive(Debug, Deserialize)]
struct LockMeta {
    #[serde(rename = "lockfile-version")]
    version: u32,
}

#[derive(Debug, Deserialize)]
struct LockRoot {
    hash: String,
}

#[derive(Debug, Deserialize)]
struct LockSpec {
    name: String,
    version: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    arch: Option<LockArch>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    dependencies: Vec<LockDep>,
    #[serde(default)]
    external: Option<LockExternal>,
}

#[derive(Debug, Deserialize)]
struct LockArch {
    #[serde(default)]
    target: Value,
}

#[derive(Debug, Deserialize)]
struct LockDep {
    name: String,
    hash: String,
    parameters: LockDepParams,
}

#[derive(Debug, Deserialize)]
struct LockDepParams {
    deptypes: Vec<String>,
    #[serde(default)]
    virtuals: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct LockExternal {
    path: Option<String>,
}

/// Compiler flags are parameters too, but not variants.
const FLAG_PARAMETERS: &[&str] = &[
    "cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs",
];

// ---------------------------------------------------------------------------
// The manifest.

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub cell: CellInfo,
    pub module: String,
    pub fingerprint: Option<String>,
    pub build_time: String,
    pub tool: ToolInfo,
    pub packages: Vec<Package>,
    pub externals: Vec<ExternalPackage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellInfo {
    pub slurm: String,
    pub spack_version: String,
    pub toolchain: String,
    pub os: String,
    pub variant: String,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub namespace: String,
    pub target: String,
    pub compiler: Option<String>,
    pub variants: BTreeMap<String, Value>,
    /// Link and run dependencies, as `name/hash`.
    pub dependencies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExternalPackage {
    pub name: String,
    pub version: String,
    pub prefix: Option<String>,
}

/// The packages a view holds: the lock's roots and everything they link to or
/// run with, minus externals (views never copy them) and build-only tools.
#[derive(Debug)]
pub struct ViewContents {
    pub packages: Vec<Package>,
    pub externals: Vec<ExternalPackage>,
}

pub fn read_lock(path: &Path, build_only: &[String]) -> Result<ViewContents> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_lock(&text, build_only)
        .with_context(|| format!("{} is not a Spack lockfile we can read", path.display()))
}

pub fn parse_lock(text: &str, build_only: &[String]) -> Result<ViewContents> {
    let lock: Lockfile = serde_json::from_str(text)?;
    if !(5..=6).contains(&lock.meta.version) {
        bail!(
            "lockfile-version {} (this toolkit reads versions 5 and 6)",
            lock.meta.version
        );
    }
    let specs = &lock.concrete_specs;
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = lock.roots.iter().map(|r| r.hash.as_str()).collect();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let spec = specs
            .get(hash)
            .with_context(|| format!("the lock names {hash} but has no spec for it"))?;
        for dep in &spec.dependencies {
            if dep
                .parameters
                .deptypes
                .iter()
                .any(|t| t == "link" || t == "run")
            {
                stack.push(&dep.hash);
            }
        }
    }
    let mut packages = Vec::new();
    let mut externals = Vec::new();
    for hash in seen {
        let spec = &specs[hash];
        if let Some(ext) = &spec.external {
            externals.push(ExternalPackage {
                name: spec.name.clone(),
                version: spec.version.clone(),
                prefix: ext.path.clone(),
            });
            continue;
        }
        if build_only.contains(&spec.name) {
            continue;
        }
        let compiler = spec
            .dependencies
            .iter()
            .find(|d| d.parameters.virtuals.iter().any(|v| v == "c" || v == "cxx"))
            .and_then(|d| specs.get(&d.hash))
            .map(|c| format!("{}@{}", c.name, c.version));
        let mut dependencies: Vec<String> = spec
            .dependencies
            .iter()
            .filter(|d| {
                d.parameters
                    .deptypes
                    .iter()
                    .any(|t| t == "link" || t == "run")
            })
            .map(|d| format!("{}/{}", d.name, d.hash))
            .collect();
        dependencies.sort();
        packages.push(Package {
            name: spec.name.clone(),
            version: spec.version.clone(),
            hash: hash.to_string(),
            namespace: spec.namespace.clone().unwrap_or_default(),
            target: spec
                .arch
                .as_ref()
                .map(|a| target_name(&a.target))
                .unwrap_or_default(),
            compiler,
            variants: spec
                .parameters
                .iter()
                .filter(|(k, _)| !FLAG_PARAMETERS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dependencies,
        });
    }
    packages.sort_by(|a, b| (&a.name, &a.hash).cmp(&(&b.name, &b.hash)));
    externals.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ViewContents {
        packages,
        externals,
    })
}

/// A target is a name, or (older specfiles) a mapping with one.
fn target_name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl Manifest {
    /// An SPDX 2.3 document of the same packages. Deterministic: its namespace
    /// and creation time come from the manifest.
    pub fn spdx(&self) -> Value {
        let id = |p: &Package| format!("SPDXRef-Package-{}-{}", sanitize(&p.name), p.hash);
        let mut packages = vec![json!({
            "SPDXID": "SPDXRef-Package-view",
            "name": self.name,
            "versionInfo": self.cell.slurm,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
        })];
        let mut relationships = vec![json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Package-view",
        })];
        let in_view: std::collections::HashSet<&str> =
            self.packages.iter().map(|q| q.hash.as_str()).collect();
        for p in &self.packages {
            packages.push(json!({
                "SPDXID": id(p),
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!("pkg:generic/{}@{}?spack_hash={}", p.name, p.version, p.hash),
                }],
            }));
            relationships.push(json!({
                "spdxElementId": "SPDXRef-Package-view",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id(p),
            }));
            for dep in &p.dependencies {
                let (name, hash) = dep.split_once('/').unwrap_or((dep, ""));
                if in_view.contains(hash) {
                    relationships.push(json!({
                        "spdxElementId": id(p),
                        "relationshipType": "DEPENDS_ON",
                        "relatedSpdxElement": format!("SPDXRef-Package-{}-{hash}", sanitize(name)),
                    }));
                }
            }
        }
        json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": self.name,
            "documentNamespace": format!(
                "https://slurm-factory.invalid/spdx/{}/{}",
                self.name,
                self.fingerprint.as_deref().unwrap_or("unfingerprinted")
            ),
            "creationInfo": {
                "created": self.build_time,
                "creators": [format!("Tool: {}-{}", self.tool.name, self.tool.version)],
            },
            "packages": packages,
            "relationships": relationships,
        })
    }
}

/// SPDX identifiers allow letters, digits, '.' and '-'.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/spack-concretized-slurm-env/spack.lock"),
        )
        .expect("tests/fixtures/spack-concretized-slurm-env/spack.lock")
    }

    #[test]
    fn real_lock_lists_the_roots_with_their_versions_and_hashes() {
        let text = fixture();
        let raw: Value = serde_json::from_str(&text).unwrap();
        let view = parse_lock(&text, &["cmake".into()]).unwrap();
        for root in raw["roots"].as_array().unwrap() {
            let hash = root["hash"].as_str().unwrap();
            let spec = &raw["concrete_specs"][hash];
            let p = view
                .packages
                .iter()
                .find(|p| p.hash == hash)
                .unwrap_or_else(|| panic!("{root}"));
            assert_eq!(p.name, spec["name"].as_str().unwrap());
            assert_eq!(p.version, spec["version"].as_str().unwrap());
        }
        for name in ["slurm", "openmpi", "pmix", "hwloc", "json-c", "munge"] {
            assert!(view.packages.iter().any(|p| p.name == name), "{name}");
        }
        let slurm = view.packages.iter().find(|p| p.name == "slurm").unwrap();
        assert_eq!(slurm.version, "24-11-6-1");
        assert_eq!(slurm.hash, "hvqr66bjbftxd7zpx7iexp2mc7xunwn7");
        assert_eq!(slurm.compiler.as_deref(), Some("gcc@12.2.0"));
        assert_eq!(slurm.variants["pmix"], true);
        assert!(!slurm.variants.contains_key("cflags"));
        assert!(slurm.dependencies.iter().any(|d| d.starts_with("munge/")));
        assert!(
            !slurm.dependencies.iter().any(|d| d.starts_with("gmake/")),
            "build deps are not listed"
        );
        // Build-only tools and externals are not in the view.
        assert!(
            !view
                .packages
                .iter()
                .any(|p| p.name == "gmake" || p.name == "cmake" || p.name == "gcc")
        );
        assert!(view.externals.iter().any(|e| e.name == "glibc"));
    }

    #[test]
    fn unknown_lockfile_version_is_named() {
        let err = parse_lock(
            r#"{"_meta":{"lockfile-version":9},"roots":[],"concrete_specs":{}}"#,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("lockfile-version 9"), "{err}");
    }
}

/// A package's sizes and hashes, signed on their own (`<stem>.sizes.json`
/// and its `.asc`): `download` checks this small statement before it writes
/// a byte of the package, then never fetches more than `size` nor unpacks
/// more than `unpacked`. A mirror without the key can make a download write
/// no more than the real package would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub schema: u32,
    /// The whole tarball's file name.
    pub tarball: String,
    pub size: u64,
    pub sha256: String,
    /// The parts in order (empty when the tarball is one file).
    pub parts: Vec<PartSize>,
    /// The length of the uncompressed tar stream.
    pub unpacked: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSize {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}
