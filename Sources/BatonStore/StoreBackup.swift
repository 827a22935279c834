import Foundation
import GRDB
import GRDBSQLite

#if canImport(Glibc)
import Glibc
#endif

/// A copy of the live store made with SQLite's online backup API, a few pages at a time.
///
/// The store holds its file exclusively, so the copy is read through the store's own
/// connection: between steps the owner goes on committing, and SQLite carries each commit
/// made through that connection into the copy as well. When ``step(pages:)`` reports done,
/// the copy is the store as of that moment, so it holds everything committed before the
/// backup began. It is written beside its destination under a temporary name and renamed
/// into place only once complete and synced: a file at the destination is never partial.
public final class StoreBackup {
    /// Where the finished copy goes.
    public let path: String
    private let partialPath: String
    private let destination: OpaquePointer
    private let backup: OpaquePointer
    private let store: JobStore
    private var ended = false

    /// What a finished backup wrote.
    public struct Summary: Sendable {
        public var pages: Int
        public var bytes: Int64
    }

    /// Starts a backup of `store` to `path`, which must not exist yet.
    ///
    /// - Throws: ``StoreError`` when the destination exists or cannot be created.
    public init(of store: JobStore, to path: String) throws {
        guard path != store.path else { throw StoreError("the backup cannot overwrite the store itself") }
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError("\(path) exists already: a backup never overwrites a file")
        }
        let partialPath = path + ".partial-\(getpid())"
        // The copy holds every payload and live token: readable by batond's user alone.
        let descriptor = open(partialPath, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreError("cannot create \(partialPath): \(String(cString: strerror(errno)))")
        }
        close(descriptor)
        var destination: OpaquePointer?
        let opened = sqlite3_open_v2(partialPath, &destination, SQLITE_OPEN_READWRITE, nil)
        guard opened == SQLITE_OK, let destination else {
            sqlite3_close(destination)
            unlink(partialPath)
            throw StoreError("cannot open \(partialPath) for the backup (SQLite error \(opened))")
        }
        let backup = store.withConnection { sqlite3_backup_init(destination, "main", $0, "main") }
        guard let backup else {
            let message = String(cString: sqlite3_errmsg(destination))
            sqlite3_close(destination)
            unlink(partialPath)
            throw StoreError("cannot start the backup: \(message)")
        }
        // The copy is synced once, whole, before it is named (Copy.persist); SQLite syncing
        // it at the end of the last step would hold up the store's thread for that long.
        sqlite3_exec(destination, "PRAGMA synchronous = OFF", nil, nil, nil)
        self.path = path
        self.partialPath = partialPath
        self.destination = destination
        self.backup = backup
        self.store = store
    }

    deinit {
        self.abandon()
    }

    /// Copies up to `pages` more pages; `true` once the copy is complete.
    ///
    /// - Throws: ``StoreError`` when the copy cannot be written (its `isStorageFull` says
    ///   whether for lack of space). The backup is then abandoned.
    public func step(pages: Int32) throws -> Bool {
        let result = self.store.withConnection { _ in sqlite3_backup_step(self.backup, pages) }
        switch result {
        case SQLITE_OK, SQLITE_BUSY, SQLITE_LOCKED:
            return false
        case SQLITE_DONE:
            return true
        default:
            let message = String(cString: sqlite3_errstr(result))
            self.abandon()
            throw StoreError("the backup to \(self.path) failed: \(message)", storageFull: result == SQLITE_FULL)
        }
    }

    /// Ends a complete backup on the store's side: releases the backup and closes the copy,
    /// which ``Copy/persist()`` then syncs and puts in place, on any thread.
    public func end() -> Copy {
        let pages = Int(sqlite3_backup_pagecount(self.backup))
        sqlite3_backup_finish(self.backup)
        sqlite3_close(self.destination)
        self.ended = true
        return Copy(path: self.path, partialPath: self.partialPath, pages: pages)
    }

    /// A complete copy, written but not yet synced or named.
    public struct Copy: Sendable {
        public let path: String
        let partialPath: String
        let pages: Int

        /// Syncs the copy and gives it its name: the slow part, kept off the store's thread.
        public func persist() throws -> Summary {
            let partial = open(self.partialPath, O_RDONLY | O_CLOEXEC)
            defer { if partial >= 0 { close(partial) } }
            var status = stat()
            guard partial >= 0, fsync(partial) == 0, fstat(partial, &status) == 0 else {
                let code = errno
                unlink(self.partialPath)
                throw StoreError("cannot sync the backup: \(String(cString: strerror(code)))", storageFull: code == ENOSPC)
            }
            // link(2) rather than rename(2): it fails if a file appeared at the destination meanwhile.
            guard link(self.partialPath, self.path) == 0 else {
                let problem = String(cString: strerror(errno))
                unlink(self.partialPath)
                throw StoreError("cannot put the backup at \(self.path): \(problem)")
            }
            unlink(self.partialPath)
            // The new name is durable once its directory is.
            let directory = open(URL(fileURLWithPath: self.path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 {
                fsync(directory)
                close(directory)
            }
            return Summary(pages: self.pages, bytes: Int64(status.st_size))
        }
    }

    /// Stops the backup and removes what it wrote.
    public func abandon() {
        guard !self.ended else { return }
        self.ended = true
        sqlite3_backup_finish(self.backup)
        sqlite3_close(self.destination)
        unlink(self.partialPath)
    }
}
