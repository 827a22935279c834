// A SQLite VFS shim that coalesces the writes of WAL frames.
//
// SQLite appends a transaction to the WAL one frame at a time, each as two writes: the
// frame's 24-byte header, then the page. A commit of six pages costs twelve `pwrite`
// calls before its `fsync`. This shim gathers contiguous appends to a WAL file in memory
// and hands them to the wrapped file as one write.
//
// What is written is exactly what SQLite asked for, in the same order; only the number of
// system calls changes. The gathered bytes reach the file:
//   - when the commit frame is complete (its header carries a non-zero database size, the
//     WAL format's commit marker), so a commit without a sync (`synchronous = NORMAL`) is
//     in the kernel when COMMIT returns and survives a crash of the process;
//   - before every sync, read, truncate, size query, file control and close of the WAL;
//   - before any write that is not an append to what is gathered.
// A marker seen where there is none only makes a flush come early. Should SQLite ever
// write a frame other than as header then page, a `synchronous = NORMAL` commit would wait
// in memory for the next write or sync: the store's test "a commit's frames are in the WAL
// file when it returns" fails if that happens, and the crash test run with
// `--durability normal` loses acknowledged jobs.

#include "CSQLiteWAL.h"

#include <sqlite3.h>
#include <string.h>

/// Room for a typical group commit (six to eight 4 KiB frames) twice over; larger
/// transactions flush as they go. SQLite's unix VFS takes writes of less than 128 KiB only
/// (it masks the length with 0x1ffff), so one flush must stay under that.
#define BUFFER_CAPACITY (64 * 1024)
/// The size of a WAL frame header (the WAL file format).
#define FRAME_HEADER_SIZE 24

typedef struct {
    sqlite3_file base;
    /// The wrapped VFS's file, in the same allocation, just after this struct.
    sqlite3_file *real;
    unsigned char *buffer;
    /// The file offset of `buffer[0]`, and how many bytes are gathered.
    sqlite3_int64 start;
    int used;
    /// The last write was a commit frame's header; flush once its page is gathered.
    int commitPending;
} WALFile;

static sqlite3_vfs *wrapped;
static sqlite3_vfs shim;

static int flush(WALFile *file) {
    if (file->used == 0) return SQLITE_OK;
    int rc = file->real->pMethods->xWrite(file->real, file->buffer, file->used, file->start);
    file->used = 0;
    return rc;
}

static int walClose(sqlite3_file *pFile) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    int closed = file->real->pMethods->xClose(file->real);
    sqlite3_free(file->buffer);
    file->buffer = NULL;
    return rc != SQLITE_OK ? rc : closed;
}

static int walRead(sqlite3_file *pFile, void *data, int amount, sqlite3_int64 offset) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xRead(file->real, data, amount, offset);
}

static int walWrite(sqlite3_file *pFile, const void *data, int amount, sqlite3_int64 offset) {
    WALFile *file = (WALFile *)pFile;
    int rc = SQLITE_OK;
    int appends = file->used > 0 && offset == file->start + file->used && file->used + amount <= BUFFER_CAPACITY;
    if (!appends) {
        rc = flush(file);
        if (rc != SQLITE_OK) return rc;
        if (file->buffer == NULL || amount > BUFFER_CAPACITY) {
            // Not gathering (no memory, or a write larger than the buffer): write through.
            rc = file->real->pMethods->xWrite(file->real, data, amount, offset);
            file->commitPending = 0;
            return rc;
        }
        file->start = offset;
    }
    memcpy(file->buffer + file->used, data, (size_t)amount);
    file->used += amount;

    if (amount == FRAME_HEADER_SIZE) {
        const unsigned char *header = data;
        // Bytes 4-7 of a frame header: the database size after a commit, 0 otherwise.
        file->commitPending = (header[4] | header[5] | header[6] | header[7]) != 0;
    } else if (file->commitPending) {
        file->commitPending = 0;
        rc = flush(file);
    }
    return rc;
}

static int walTruncate(sqlite3_file *pFile, sqlite3_int64 size) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xTruncate(file->real, size);
}

static int walSync(sqlite3_file *pFile, int flags) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xSync(file->real, flags);
}

static int walFileSize(sqlite3_file *pFile, sqlite3_int64 *size) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileSize(file->real, size);
}

static int walLock(sqlite3_file *pFile, int level) {
    WALFile *file = (WALFile *)pFile;
    return file->real->pMethods->xLock(file->real, level);
}

static int walUnlock(sqlite3_file *pFile, int level) {
    WALFile *file = (WALFile *)pFile;
    return file->real->pMethods->xUnlock(file->real, level);
}

static int walCheckReservedLock(sqlite3_file *pFile, int *result) {
    WALFile *file = (WALFile *)pFile;
    return file->real->pMethods->xCheckReservedLock(file->real, result);
}

static int walFileControl(sqlite3_file *pFile, int op, void *argument) {
    WALFile *file = (WALFile *)pFile;
    int rc = flush(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileControl(file->real, op, argument);
}

static int walSectorSize(sqlite3_file *pFile) {
    WALFile *file = (WALFile *)pFile;
    return file->real->pMethods->xSectorSize(file->real);
}

static int walDeviceCharacteristics(sqlite3_file *pFile) {
    WALFile *file = (WALFile *)pFile;
    return file->real->pMethods->xDeviceCharacteristics(file->real);
}

/// Version 1: SQLite maps shared memory and pages through the database file, never the WAL.
static const sqlite3_io_methods walMethods = {
    1,
    walClose,
    walRead,
    walWrite,
    walTruncate,
    walSync,
    walFileSize,
    walLock,
    walUnlock,
    walCheckReservedLock,
    walFileControl,
    walSectorSize,
    walDeviceCharacteristics,
    NULL, NULL, NULL, NULL, NULL, NULL,
};

/// The wrapped file sits after the WALFile, rounded up so that it stays aligned.
static int wrappedOffset(void) {
    return (int)((sizeof(WALFile) + 15) & ~(size_t)15);
}

static int shimOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *pFile, int flags, int *outFlags) {
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL)) {
        // Every other file is the wrapped VFS's own, opened in place.
        return wrapped->xOpen(wrapped, name, pFile, flags, outFlags);
    }
    WALFile *file = (WALFile *)pFile;
    memset(file, 0, sizeof(WALFile));
    file->real = (sqlite3_file *)((unsigned char *)pFile + wrappedOffset());
    int rc = wrapped->xOpen(wrapped, name, file->real, flags, outFlags);
    if (rc != SQLITE_OK) return rc;
    // Without the buffer every write goes straight through, which is merely slower.
    file->buffer = sqlite3_malloc(BUFFER_CAPACITY);
    file->base.pMethods = &walMethods;
    return SQLITE_OK;
}

static int shimDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
    (void)vfs;
    return wrapped->xDelete(wrapped, name, syncDirectory);
}

static int shimAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return wrapped->xAccess(wrapped, name, flags, result);
}

static int shimFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return wrapped->xFullPathname(wrapped, name, size, out);
}

static void *shimDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return wrapped->xDlOpen(wrapped, name);
}

static void shimDlError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    wrapped->xDlError(wrapped, size, message);
}

static void (*shimDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return wrapped->xDlSym(wrapped, handle, symbol);
}

static void shimDlClose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    wrapped->xDlClose(wrapped, handle);
}

static int shimRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return wrapped->xRandomness(wrapped, size, out);
}

static int shimSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return wrapped->xSleep(wrapped, microseconds);
}

static int shimCurrentTime(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return wrapped->xCurrentTime(wrapped, now);
}

static int shimGetLastError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    return wrapped->xGetLastError ? wrapped->xGetLastError(wrapped, size, message) : 0;
}

static int shimCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return wrapped->xCurrentTimeInt64(wrapped, now);
}

int baton_wal_coalescing_install(void) {
    static int installed = 0;
    if (installed) return SQLITE_OK;
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    wrapped = sqlite3_vfs_find(NULL);
    if (wrapped == NULL) return SQLITE_ERROR;
    if (wrapped->iVersion < 2 || wrapped->xCurrentTimeInt64 == NULL) return SQLITE_ERROR;
    shim = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = wrappedOffset() + wrapped->szOsFile,
        .mxPathname = wrapped->mxPathname,
        .zName = "baton-wal-coalescing",
        .xOpen = shimOpen,
        .xDelete = shimDelete,
        .xAccess = shimAccess,
        .xFullPathname = shimFullPathname,
        .xDlOpen = shimDlOpen,
        .xDlError = shimDlError,
        .xDlSym = shimDlSym,
        .xDlClose = shimDlClose,
        .xRandomness = shimRandomness,
        .xSleep = shimSleep,
        .xCurrentTime = shimCurrentTime,
        .xGetLastError = shimGetLastError,
        .xCurrentTimeInt64 = shimCurrentTimeInt64,
    };
    rc = sqlite3_vfs_register(&shim, 1);
    if (rc == SQLITE_OK) installed = 1;
    return rc;
}
