/// Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): a drafted token `d`,
/// drawn from the draft's distribution `q`, is kept with probability min(1, p(d) / q(d)),
/// where `p` is the distribution the target model's sampler would draw from; otherwise the
/// token is drawn from the residual `max(0, p - q)`, normalised. Whatever `q` is, the token
/// that comes out is distributed exactly as `p`, so speculation never changes what a
/// request samples, only how many target passes it takes.
///
/// A proposer that drafts deterministically (prompt lookup, a greedy draft model) has `q`
/// all on `d`: `d` is kept with probability p(d), and a rejection draws from `p` without
/// `d`. Under greedy sampling `p` is all on the argmax, so `d` is kept exactly when it is
/// the token plain decoding would choose.
enum SpeculativeSampling {
    /// The drafted token, or the replacement that ends the accepted run.
    struct Outcome: Equatable {
        let token: Int
        let accepted: Bool
    }

    /// Verifies `draft` against `target` (from `Sampler.distribution`). `draftProbabilities`
    /// is `q` as token → probability; nil means a deterministic draft.
    static func verify(draft: Int, draftProbabilities: [Int: Float]?, target: [(token: Int, probability: Float)],
                       sampler: inout Sampler) -> Outcome {
        let p = target.first { $0.token == draft }?.probability ?? 0
        let q = draftProbabilities.map { $0[draft] ?? 0 } ?? 1
        // u < p/q, written without the division (q > 0 for a token the draft drew).
        if sampler.uniform() * q < p { return Outcome(token: draft, accepted: true) }
        var residual: [(token: Int, weight: Float)] = []
        residual.reserveCapacity(target.count)
        var total: Float = 0
        for (token, probability) in target {
            let w = max(0, probability - (draftProbabilities.map { $0[token] ?? 0 } ?? (token == draft ? 1 : 0)))
            if w > 0 {
                residual.append((token, w))
                total += w
            }
        }
        // p ≤ q everywhere with p ≠ q cannot happen (both sum to 1); rounding can leave
        // nothing, and then p's most likely token is the answer.
        guard total > 0 else { return Outcome(token: target.max { $0.probability < $1.probability }?.token ?? draft, accepted: false) }
        let u = sampler.uniform() * total
        var cumulative: Float = 0
        for (token, w) in residual {
            cumulative += w
            if u < cumulative { return Outcome(token: token, accepted: false) }
        }
        return Outcome(token: residual.last!.token, accepted: false)
    }
}
