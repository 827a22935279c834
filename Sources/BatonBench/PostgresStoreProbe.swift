import BatonCore
import BatonPostgres
import Foundation
import Logging

/// How fast the PostgreSQL store turns over jobs by itself, with no batond in front: each
/// transaction inserts a batch, claims it and completes it, one statement apiece, the shape
/// a host's group commit gives a batch. The ceiling a host's batond can approach, and the
/// figure to set beside `scripts/bench-postgres-anchor`.
struct PostgresStoreProbe {
    let url: String
    let jobs: Int
    let batch: Int

    func run() throws {
        let location = try PostgresLocation(self.url)
        let result = Result<(seconds: Double, cycles: Int), any Error>.blocking {
            var logger = Logger(label: "baton.bench")
            logger.logLevel = .warning
            let store = try await PostgresStore.open(location, logger: logger)
            do {
                let result = try await self.turnOver(store)
                await store.close()
                return result
            } catch {
                await store.close()
                throw error
            }
        }
        let (seconds, cycles) = try result.get()
        print("PostgreSQL store, no batond: \(cycles) jobs in transactions of \(self.batch) (insert, claim, complete)")
        print(String(format: "  %.0f cycles/s (%.2f s)", Double(cycles) / seconds, seconds))
    }

    /// Pushes the jobs through; how long it took and how many completed.
    private func turnOver(_ store: PostgresStore) async throws -> (seconds: Double, cycles: Int) {
        let job = NewJob(
            queue: "probe", payload: #"{"n": 1}"#, priority: 0, runAt: 0, maxAttempts: 3, backoff: .standard,
            leaseMilliseconds: 30_000, uniqueKey: nil)
        let wishes = Array(repeating: PostgresTransaction.ClaimWish(queues: ["probe"]), count: self.batch)
        var cycles = 0
        let started = ContinuousClock.now
        while cycles < self.jobs {
            cycles += try await store.write { tx in
                _ = try await tx.insert(Array(repeating: job, count: self.batch))
                let claims = try await tx.claim(wishes, host: "probe").compactMap { $0 }
                let done = try await tx.complete(claims.map { ($0.job.id, $0.token, nil) })
                return done.filter { $0 != nil }.count
            }
        }
        let elapsed = ContinuousClock.now - started
        return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, cycles)
    }
}

extension Result where Failure == any Error {
    /// Runs `body` to its end from synchronous code, on a task of its own.
    static func blocking(_ body: @escaping @Sendable () async throws -> Success) -> Self where Success: Sendable {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<Success>()
        Task {
            do { box.value = .success(try await body()) } catch { box.value = .failure(error) }
            done.signal()
        }
        done.wait()
        return box.value!
    }
}

/// Carries a task's result to the thread waiting for it (the semaphore orders the accesses).
private final class ResultBox<Success: Sendable>: @unchecked Sendable {
    var value: Result<Success, any Error>?
}
