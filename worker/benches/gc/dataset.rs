//! The synthetic cache: a deterministic DAG of store paths, generated path by path so
//! that both loads (Larder's schema and niks3's) stream the same data without holding it.
//!
//! Shape, modelled on a cache fed by a CI over many nixpkgs revisions:
//! - a permanent core (bootstrap tools, sources) every later path may reference;
//! - `GENERATIONS` generations in time order (one per revision). Within one, the first
//!   fifth are leaves (fetched sources, fonts: at most a couple of core references),
//!   the rest depend on 2–17 lower paths of the same generation, skewed towards its
//!   first paths (its glibc, gcc, bash), on the core (15 %) and on leaves of the last
//!   three generations (10 %: unchanged derivations keep their store path);
//! - every path no other path depends on is a root (each CI run pushes the closures of
//!   its top-level outputs, so every path is in some root's closure), aged by
//!   generation: the older half of the generations is past the cutoff, so half the
//!   roots expire;
//! - a few pinned expired roots, and a few pending upload sessions naming paths of
//!   whole closures of every age.
//!
//! Each path is three objects: `<hash>.narinfo`, which references its NAR, its listing
//! and its dependencies' narinfos, `nar/<filehash>.nar.zst` and `<hash>.ls`.

/// Generations the paths are spread over (nixpkgs revisions, one a day).
pub const GENERATIONS: u64 = 50;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Roots older than this expire: between generation 24 (ages 25.5–26 days) and 25.
pub const OLDER_THAN_HOURS: i64 = 606;
/// Upload sessions still in flight; each names a whole closure, as a push does.
pub const PENDING_SESSIONS: u64 = 10;

const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A small, fast, seedable generator (splitmix64); one stream per purpose and path.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, purpose: u64, index: u64) -> Rng {
        Rng(mix(
            seed ^ mix(purpose.wrapping_mul(0x9e37_79b9) ^ mix(index))
        ))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn base32(rng: &mut Rng, len: usize, out: &mut String) {
    for _ in 0..len {
        out.push(NIX32[rng.below(32) as usize] as char);
    }
}

/// The cache's parameters; everything else is a pure function of them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Store paths.
    pub paths: u64,
    /// Seed of every random choice.
    pub seed: u64,
    core: u64,
    gen_size: u64,
    /// Bit `i` set when some path depends on path `i`.
    referenced: Vec<u64>,
}

/// One store path, as the loaders need it.
pub struct Path {
    pub hash: String,
    pub nar: String,
    pub nar_size: i64,
    pub file_size: i64,
    /// Indexes of the paths it depends on (sorted, unique, never itself).
    pub deps: Vec<u64>,
    /// Age (ms before "now") of its root, when it is one.
    pub root_age: Option<i64>,
    /// Age (ms) of its generation, for created/touched times.
    pub age: i64,
}

impl Dataset {
    pub fn new(paths: u64, seed: u64) -> Dataset {
        let core = (paths / 100).clamp(1, 1000);
        let gen_size = (paths.saturating_sub(core) / GENERATIONS).max(10);
        let mut ds = Dataset {
            paths,
            seed,
            core,
            gen_size,
            referenced: vec![0; paths.div_ceil(64) as usize],
        };
        let mut referenced = vec![0u64; paths.div_ceil(64) as usize];
        for i in 0..paths {
            for d in ds.path(i).deps {
                referenced[(d / 64) as usize] |= 1 << (d % 64);
            }
        }
        ds.referenced = referenced;
        ds
    }

    fn is_referenced(&self, i: u64) -> bool {
        self.referenced[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn generation(&self, i: u64) -> (u64, u64) {
        let g = ((i - self.core) / self.gen_size).min(GENERATIONS - 1);
        (g, i - self.core - g * self.gen_size)
    }

    fn leaves(&self) -> u64 {
        (self.gen_size / 5).max(1)
    }

    /// The store path hash (32 characters) of path `i`.
    pub fn hash(&self, i: u64) -> String {
        let mut s = String::with_capacity(32);
        base32(&mut Rng::new(self.seed, 1, i), 32, &mut s);
        s
    }

    pub fn narinfo_key(&self, i: u64) -> String {
        let mut s = self.hash(i);
        s.push_str(".narinfo");
        s
    }

    fn core_pick(&self, rng: &mut Rng, below: u64) -> u64 {
        // Power-law popularity: path 0 (the glibc of the bootstrap) is the most used.
        let u = rng.unit();
        ((below as f64) * u * u * u) as u64
    }

    pub fn path(&self, i: u64) -> Path {
        let mut rng = Rng::new(self.seed, 2, i);
        let hash = self.hash(i);
        let mut nar = String::with_capacity(64);
        nar.push_str("nar/");
        base32(&mut rng, 52, &mut nar);
        nar.push_str(".nar.zst");
        let nar_size = 4096 + rng.below(8 << 20) as i64;
        let file_size = nar_size / 3 + 1;
        let mut deps = Vec::new();
        let mut root_age = None;
        let age;
        if i < self.core {
            age = (GENERATIONS as i64 + 1) * DAY_MS;
            for _ in 0..rng.below(i.min(4) + 1) {
                deps.push(rng.below(i));
            }
        } else {
            let (g, j) = self.generation(i);
            let first = self.core + g * self.gen_size;
            // A generation's paths span half a day; later ones are younger.
            age =
                (GENERATIONS - g) as i64 * DAY_MS - (j as i64 * DAY_MS / 2) / self.gen_size as i64;
            if j < self.leaves() {
                for _ in 0..rng.below(3) {
                    deps.push(self.core_pick(&mut rng, self.core));
                }
            } else {
                for _ in 0..2 + rng.below(16) {
                    let r = rng.unit();
                    let dep = if r < 0.15 {
                        self.core_pick(&mut rng, self.core)
                    } else if r < 0.25 {
                        let back = rng.below(g.min(3) + 1);
                        self.core + (g - back) * self.gen_size + rng.below(self.leaves())
                    } else {
                        let u = rng.unit();
                        first + ((j as f64) * u * u * u) as u64
                    };
                    deps.push(dep);
                }
            }
            if !self.is_referenced(i) {
                root_age = Some(age);
            }
        }
        deps.retain(|&d| d < i);
        deps.sort_unstable();
        deps.dedup();
        Path {
            hash,
            nar,
            nar_size,
            file_size,
            deps,
            root_age,
            age,
        }
    }

    /// Pinned roots: the first root of every tenth generation of the expired half.
    pub fn pins(&self) -> Vec<u64> {
        let mut pins = Vec::new();
        for g in (0..GENERATIONS / 2).step_by(10) {
            let start = self.core + g * self.gen_size;
            if let Some(i) = (start..start + self.gen_size)
                .take_while(|&i| i < self.paths)
                .find(|&i| self.path(i).root_age.is_some())
            {
                pins.push(i);
            }
        }
        pins
    }

    /// Paths named by pending session `s`: the closure of a random path, root first
    /// (they and their NARs and listings are pending).
    pub fn pending(&self, s: u64) -> Vec<u64> {
        let root = Rng::new(self.seed, 3, s).below(self.paths);
        let mut seen = std::collections::BTreeSet::from([root]);
        let mut todo = vec![root];
        while let Some(i) = todo.pop() {
            for d in self.path(i).deps {
                if seen.insert(d) {
                    todo.push(d);
                }
            }
        }
        seen.remove(&root);
        std::iter::once(root).chain(seen).collect()
    }
}
