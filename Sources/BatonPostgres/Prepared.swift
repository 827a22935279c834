import PostgresNIO

/// A statement of a batch's hot path, prepared once per connection: PostgreSQL parses and
/// plans it on first use and afterwards only binds and runs it. Planning one of the batch
/// statements costs as much as running it, so the statements every batch sends are these;
/// the rest go as plain queries.
///
/// A conforming type gives its name (short: PostgreSQL cuts names at 63 bytes, and two cut
/// alike would collide), its SQL (with `$1`, `$2`, … in the order of `makeBindings`) and its
/// parameters; rows come back undecoded, for the caller to decode as a plain query's.
protocol PreparedBatchStatement: PostgresPreparedStatement where Row == PostgresRow {}

extension PreparedBatchStatement {
    func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
}

extension PostgresTransaction {
    /// Runs `statement`, preparing it first if this connection has not yet.
    func run<Statement: PreparedBatchStatement>(_ statement: Statement) async throws -> some AsyncSequence<PostgresRow, any Error> {
        try await self.connection.execute(statement, logger: self.logger)
    }
}

extension PostgresBindings {
    /// Bindings of `values`, in order.
    init(_ values: any PostgresDynamicTypeEncodable...) {
        self.init(capacity: values.count)
        for value in values { self.append(value) }
    }
}

extension AsyncSequence where Element == PostgresRow {
    /// For a statement over numbered requests that returns the number (from 1) of each
    /// request it applied: whether each of `count` requests applied, in order.
    func numbered(count: Int) async throws -> [Bool] {
        var applied = [Bool](repeating: false, count: count)
        for try await n in self.decode(Int.self) {
            applied[n - 1] = true
        }
        return applied
    }

    /// For a statement over numbered requests that returns, for each request it applied,
    /// its number (from 1) and one value: each of `count` requests' value, in order, `nil`
    /// where it did not apply.
    func numbered<Value: PostgresDecodable & Sendable>(_ type: Value.Type, count: Int) async throws -> [Value?] {
        var values = [Value?](repeating: nil, count: count)
        for try await (n, value) in self.decode((Int, Value).self) {
            values[n - 1] = value
        }
        return values
    }

    /// The first row's single column, if there is a row; the rest are read and dropped.
    func first<Value: PostgresDecodable & Sendable>(_ type: Value.Type) async throws -> Value? {
        var first: Value?
        for try await value in self.decode(Value.self) where first == nil {
            first = value
        }
        return first
    }
}
