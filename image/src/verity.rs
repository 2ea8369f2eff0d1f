//! The dm-verity hash tree of `verity` bundles, laid out exactly as rauc 1.8 writes it.
//!
//! ```text
//! bundle:  | squashfs (n * 4096) | level k (top) | ... | level 0 (leaves) | CMS | len u64 BE |
//!                                 \________ verity-size bytes ________/
//! level 0: one 32-byte digest per 4096-byte squashfs block, 128 digests per 4096-byte hash block,
//!          the last hash block zero-padded
//! level i: one digest per hash block of level i-1, packed the same way; the top level is one block
//! digest:  sha256(salt || block)          root hash: sha256(salt || top block)
//! ```
//! No verity superblock is stored. The tree is hashed in parallel (one rayon task per 512 KiB of
//! payload) because it is on the path of both `bundle` and `verify`.

use std::io::Read;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// dm-verity data and hash block size used by RAUC.
pub const BLOCK: usize = 4096;
const DIGESTS_PER_BLOCK: usize = BLOCK / 32;
/// Payload read per batch: a multiple of one leaf hash block's coverage (128 * 4096).
const BATCH: usize = 32 * DIGESTS_PER_BLOCK * BLOCK;

/// A computed tree: its bytes as stored in the bundle and its root hash.
pub struct HashTree {
    /// Levels top first, leaves last: exactly the bytes between squashfs and signature.
    pub tree: Vec<u8>,
    /// sha256(salt || top block).
    pub root: [u8; 32],
}

fn salted(salt: &[u8; 32], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hashes a run of whole 4096-byte blocks into packed, zero-padded hash blocks.
fn hash_level(salt: &[u8; 32], data: &[u8]) -> Vec<u8> {
    data.par_chunks(DIGESTS_PER_BLOCK * BLOCK)
        .flat_map_iter(|group| {
            let mut out = vec![0u8; BLOCK];
            for (i, block) in group.chunks(BLOCK).enumerate() {
                out[i * 32..i * 32 + 32].copy_from_slice(&salted(salt, block));
            }
            out
        })
        .collect()
}

/// Size of the tree for `data_len` bytes of payload (which must be a multiple of 4096).
pub fn tree_size(data_len: u64) -> u64 {
    let mut blocks = data_len.div_ceil(BLOCK as u64);
    let mut total = 0;
    loop {
        let hash_blocks = blocks.div_ceil(DIGESTS_PER_BLOCK as u64).max(1);
        total += hash_blocks;
        if hash_blocks == 1 {
            return total * BLOCK as u64;
        }
        blocks = hash_blocks;
    }
}

/// Computes the tree over `data_len` bytes read from `data` (a multiple of 4096), calling
/// `progress` with the bytes consumed so far.
pub fn compute(
    mut data: impl Read,
    data_len: u64,
    salt: &[u8; 32],
    progress: &dyn Fn(u64),
) -> std::io::Result<HashTree> {
    debug_assert_eq!(data_len % BLOCK as u64, 0);
    let mut leaves = Vec::with_capacity((tree_size(data_len) as usize).min(1 << 30));
    let mut buf = vec![0u8; BATCH];
    let mut done = 0u64;
    while done < data_len {
        let want = (data_len - done).min(BATCH as u64) as usize;
        data.read_exact(&mut buf[..want])?;
        leaves.extend_from_slice(&hash_level(salt, &buf[..want]));
        done += want as u64;
        progress(done);
    }
    let mut levels = vec![leaves];
    // Each level above the leaves hashes the blocks of the one below, until one block is left.
    while levels.last().is_some_and(|l| l.len() > BLOCK) {
        let below = levels.last().expect("loop condition: a level exists");
        let above = hash_level(salt, below);
        levels.push(above);
    }
    let top = levels.last().expect("the leaf level always exists");
    let root = salted(salt, top);
    let tree = levels.into_iter().rev().flatten().collect();
    Ok(HashTree { tree, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_rauc() {
        // 74 blocks (rauc's 300 kB example) fit one leaf hash block.
        assert_eq!(tree_size(74 * 4096), 4096);
        assert_eq!(tree_size(128 * 4096), 4096);
        // 129 blocks: two leaf blocks plus a top block.
        assert_eq!(tree_size(129 * 4096), 3 * 4096);
        // 256 MiB: 65536 blocks -> 512 leaf blocks -> 4 -> 1.
        assert_eq!(tree_size(256 << 20), (512 + 4 + 1) * 4096);
    }

    #[test]
    fn tree_layout_is_top_first_and_root_hashes_top() {
        let salt = [7u8; 32];
        let data: Vec<u8> = (0..129 * 4096u32).map(|i| (i % 251) as u8).collect();
        let t = compute(&data[..], data.len() as u64, &salt, &|_| {}).unwrap();
        assert_eq!(t.tree.len() as u64, tree_size(data.len() as u64));
        let (top, leaves) = t.tree.split_at(4096);
        // The last leaf digest covers data block 128.
        assert_eq!(
            &leaves[4096..4096 + 32],
            &salted(&salt, &data[128 * 4096..])
        );
        assert!(leaves[4096 + 32..].iter().all(|&b| b == 0));
        assert_eq!(&top[..32], &salted(&salt, &leaves[..4096]));
        assert_eq!(t.root, salted(&salt, top));
    }
}
