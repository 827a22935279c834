#ifndef BATON_CSQLITEWAL_H
#define BATON_CSQLITEWAL_H

/// Installs, once per process, a SQLite VFS that wraps the default one and becomes the
/// default. It writes each transaction's WAL frames with one `pwrite` instead of two per
/// frame (SQLite writes a frame's 24-byte header and its page separately); every other
/// file, and every other call, goes straight to the wrapped VFS.
///
/// Returns SQLITE_OK (0), or SQLite's error code when the VFS cannot be registered.
int baton_wal_coalescing_install(void);

#endif
