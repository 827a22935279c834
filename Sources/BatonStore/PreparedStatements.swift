import GRDB

/// The statements every job passes through, each prepared once and then found by its
/// position in a small array.
///
/// GRDB's statement cache finds a statement by its SQL text, which costs a hash and a
/// comparison of a few hundred bytes on every use: a twentieth of the authority's time
/// when these statements run tens of thousands of times a second.
final class PreparedStatements {
    enum Name: Int, CaseIterable {
        case insertJob
        case bestReadyJob
        case nextGroupJob
        case claimRead
        case claimUpdate
        case complete
        case dependents

        var sql: String {
            switch self {
            case .insertJob: StoreTransaction.insertJobSQL
            case .bestReadyJob: StoreTransaction.bestReadyJobSQL
            case .nextGroupJob: StoreTransaction.nextGroupJobSQL
            case .claimRead: StoreTransaction.claimReadSQL
            case .claimUpdate: StoreTransaction.claimUpdateSQL
            case .complete: StoreTransaction.completeSQL
            case .dependents: "SELECT job_id FROM job_dependencies WHERE depends_on = ?"
            }
        }
    }

    private var statements: [Statement?] = Array(repeating: nil, count: Name.allCases.count)

    /// The statement, prepared on `db` the first time it is asked for.
    func statement(_ name: Name, on db: Database) throws -> Statement {
        if let statement = self.statements[name.rawValue] { return statement }
        let statement = try db.makeStatement(sql: name.sql)
        self.statements[name.rawValue] = statement
        return statement
    }

    /// Finalizes every statement, which SQLite needs before the connection can close.
    func finalizeAll() {
        self.statements = Array(repeating: nil, count: Name.allCases.count)
    }
}
