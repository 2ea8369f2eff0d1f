//! A small fsync'd append-only journal with positions and cursor trimming: meterd's reading buffer and uplinkd's outgoing queue (being built; see issue 3).
