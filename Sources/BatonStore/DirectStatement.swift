import GRDB
import GRDBSQLite

/// A prepared statement driven through SQLite's C API, for the few statements every job
/// passes through (insert, claim, complete).
///
/// GRDB prepares and caches the statement; binding and stepping it directly skips the
/// boxing of arguments and rows that GRDB's general API pays for, which on the claim path
/// was a large share of the authority's time per request.
struct DirectStatement {
    private let statement: Statement
    private let handle: OpaquePointer
    private let connection: OpaquePointer

    init(_ db: Database, sql: String) throws {
        try self.init(db, statement: db.cachedStatement(sql: sql))
    }

    /// One of the statements every job passes through, prepared once.
    init(_ tx: StoreTransaction, _ name: PreparedStatements.Name) throws {
        try self.init(tx.db, statement: tx.prepared.statement(name, on: tx.db))
    }

    private init(_ db: Database, statement: Statement) {
        self.statement = statement
        self.handle = statement.sqliteStatement
        self.connection = db.sqliteConnection!
        sqlite3_reset(self.handle)
        sqlite3_clear_bindings(self.handle)
    }

    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(self.handle, index, value)
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(self.handle, index, value) } else { sqlite3_bind_null(self.handle, index) }
    }

    func bind(_ index: Int32, _ value: Bool) {
        sqlite3_bind_int64(self.handle, index, value ? 1 : 0)
    }

    func bind(_ index: Int32, _ value: Double) {
        sqlite3_bind_double(self.handle, index, value)
    }

    func bind(_ index: Int32, _ value: String?) {
        guard let text = value else {
            sqlite3_bind_null(self.handle, index)
            return
        }
        text.withCString { pointer in
            // SQLITE_TRANSIENT: SQLite copies the text before this call returns.
            _ = sqlite3_bind_text(
                self.handle, index, pointer, Int32(text.utf8.count), unsafeBitCast(-1, to: sqlite3_destructor_type.self)
            )
        }
    }

    /// Runs the statement and reads its first row, if any, with `read`.
    ///
    /// The statement is always run to completion and reset before this returns: a
    /// statement left mid-step keeps a read transaction open on the connection, and then
    /// the WAL can never be checkpointed back to its start and grows without end.
    func firstRow<T>(_ read: (DirectStatement) -> T) throws -> T? {
        defer { sqlite3_reset(self.handle) }
        guard try self.step() else { return nil }
        let value = read(self)
        while try self.step() {}
        return value
    }

    /// Reads rows with `read` until it accepts one (returns non-`nil`), and returns that.
    ///
    /// The rest of the rows are never computed: resetting the statement ends it, which is
    /// what lets a walk of an index stop at the first row it wants.
    func firstAccepted<T>(_ read: (DirectStatement) -> T?) throws -> T? {
        defer { sqlite3_reset(self.handle) }
        while try self.step() {
            if let value = read(self) { return value }
        }
        return nil
    }

    /// Runs the statement and reads every row with `read`.
    func allRows<T>(_ read: (DirectStatement) -> T) throws -> [T] {
        defer { sqlite3_reset(self.handle) }
        var rows: [T] = []
        while try self.step() { rows.append(read(self)) }
        return rows
    }

    /// Runs a statement that returns no rows; the number of rows it changed.
    func execute() throws -> Int {
        defer { sqlite3_reset(self.handle) }
        while try self.step() {}
        return Int(sqlite3_changes(self.connection))
    }

    /// Steps once: `true` with a row to read, `false` when done.
    private func step() throws -> Bool {
        switch sqlite3_step(self.handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code:
            let message = String(cString: sqlite3_errmsg(self.connection))
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: self.statement.sql)
        }
    }

    func int64(_ column: Int32) -> Int64 {
        sqlite3_column_int64(self.handle, column)
    }

    func optionalInt64(_ column: Int32) -> Int64? {
        sqlite3_column_type(self.handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(self.handle, column)
    }

    func string(_ column: Int32) -> String {
        self.optionalString(column) ?? ""
    }

    func optionalString(_ column: Int32) -> String? {
        guard let text = sqlite3_column_text(self.handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(self.handle, column))
        return String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self)
    }
}
