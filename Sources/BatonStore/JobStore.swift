import BatonCore
import CSQLiteWAL
import GRDB
import GRDBSQLite

/// The durable job store: one SQLite database in WAL mode, written by one owner.
///
/// `JobStore` is not thread-safe by design. The authority calls it from one thread, and
/// a whole batch of requests runs inside one ``write(_:)`` transaction, so one fsync
/// covers every request in the batch (group commit).
public final class JobStore {
    private let database: DatabaseQueue
    private let prepared = PreparedStatements()
    private let lock: StoreLock
    public let path: String
    public let durability: Durability

    /// Opens (creating if needed) and migrates the store at `path`.
    ///
    /// - Throws: ``StoreError`` when another process owns the store or it cannot be opened.
    public init(path: String, durability: Durability = .full) throws {
        self.lock = try StoreLock(path: path + ".lock")
        guard Self.walCoalescing == SQLITE_OK else {
            throw StoreError("cannot install the WAL write coalescing VFS (SQLite error \(Self.walCoalescing))")
        }
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            // The store has exactly one owner (see StoreLock), so SQLite's own file locks
            // would only cost system calls on every transaction; holding them for the life
            // of the connection also keeps the WAL index in process memory.
            try db.execute(sql: "PRAGMA locking_mode = EXCLUSIVE")
        }
        configuration.journalMode = .wal
        configuration.label = "baton.store"
        do {
            self.database = try DatabaseQueue(path: path, configuration: configuration)
            // GRDB's WAL set-up chooses NORMAL; the durability we promise is decided here.
            try self.database.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = \(durability.synchronousPragma)")
            }
            try Self.migrator.migrate(self.database)
        } catch let error as DatabaseError {
            throw StoreError("cannot open the store at \(path): \(error.message ?? error.description)")
        }
        self.path = path
        self.durability = durability
    }

    /// Installed once, before the first store opens: every commit's WAL frames then reach
    /// the kernel in one write instead of two per page (see CSQLiteWAL.c).
    private static let walCoalescing: Int32 = baton_wal_coalescing_install()

    /// Runs `body` in one immediate transaction and commits it durably.
    ///
    /// If `body` throws, nothing it did is kept. If the commit itself fails, the error is
    /// thrown and the caller cannot know what is durable: it must stop serving, unless the
    /// failure was lack of space (``isStorageFull(_:)``), after which nothing was kept.
    public func write<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        try self.database.writeWithoutTransaction { db in
            // GRDB's `inTransaction` would compile BEGIN and COMMIT afresh for every batch;
            // these are prepared once.
            try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
            do {
                let value = try body(StoreTransaction(db: db, prepared: self.prepared))
                try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
                return value
            } catch {
                // A failed COMMIT may leave the transaction open, or SQLite may already
                // have rolled it back; either way nothing of it is kept.
                if db.isInsideTransaction { try? db.rollback() }
                throw error
            }
        }
    }

    /// Whether a failed write failed for lack of disk space (SQLITE_FULL, which SQLite
    /// reports for ENOSPC). Such a transaction is rolled back whole, its commit record never
    /// written, so nothing of it is durable and the store is as it was before it.
    public static func isStorageFull(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_FULL
    }

    /// Runs `body` with the store's SQLite connection, between transactions.
    func withConnection<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T {
        try self.database.writeWithoutTransaction { db in try body(db.sqliteConnection!) }
    }

    /// The `PRAGMA synchronous` level in force: 2 is FULL, 1 is NORMAL.
    public func synchronousLevel() throws -> Int {
        try self.database.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// The journal mode in force, `wal` when all is well.
    public func journalMode() throws -> String {
        try self.database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "" }
    }

    /// Closes the database, checkpointing the WAL, and releases the lock.
    public func close() throws {
        self.database.writeWithoutTransaction { _ in self.prepared.finalizeAll() }
        try self.database.close()
    }
}
