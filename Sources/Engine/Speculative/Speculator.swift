import Foundation
import Models

/// Speculative decoding in the serving engine's step: before scheduling, each decoding
/// sequence gets a draft whose length the policy chooses; the scheduler reserves KV slots
/// for it; the forward pass returns logits for every drafted position; `EngineCore`
/// verifies the drafts token by token with `SpeculativeSampling` and the scheduler keeps
/// the accepted tokens' keys and values and drops the rest.
final class Speculator {
    let configuration: SpeculationConfiguration
    let proposer: any Proposer
    let policy: SpeculationPolicy

    init(configuration: SpeculationConfiguration, proposer: any Proposer, policy: SpeculationPolicy) {
        self.configuration = configuration
        self.proposer = proposer
        self.policy = policy
    }

    /// Sets the draft of every sequence in `running` that is decoding (one token to
    /// compute, no samples left to fork) and has more than one token left to generate.
    func draft(_ running: [Sequence], contextLength: Int, tokenBudget: Int) throws {
        try proposer.prepare(running.filter { $0.uncomputed > 1 })
        // The step before drafts: every running sequence's own tokens, within the budget,
        // and one token out of each decoding sequence.
        var step = StepPlan()
        for s in running where step.tokens < tokenBudget {
            step.add(tokens: min(s.uncomputed, tokenBudget - step.tokens), from: s.computed)
        }
        step.output = Double(running.filter { $0.uncomputed == 1 }.count)
        var requests: [(sequence: Sequence, limit: Int)] = []
        for s in running {
            s.draft = Draft()
            guard s.uncomputed == 1, s.pendingForks == 0 else { continue }
            // A seeded sampled request reproduces its tokens exactly, as without speculation:
            // drafts would spend its generator's draws at places that depend on timing.
            let sampling = s.request.request.parameters.sampling
            if sampling.seed != nil && sampling.temperature > 0 && !configuration.speculatesSeededSampling { continue }
            let room = min(s.request.request.parameters.maxTokens - s.generatedCount, contextLength - s.tokens.count) - 1
            let limit = min(room, configuration.maxDraft, tokenBudget - step.tokens)
            guard limit > 0 else { continue }
            var k = limit
            if configuration.adaptive {
                let α = s.acceptance.rate
                k = policy.draftLength(acceptance: α, limit: limit, context: s.tokens.count, step: step)
                if k == 0 {
                    s.acceptance.relax()
                    s.branchAcceptance.relax()
                }
                step.output += SpeculationPolicy.expectedTokens(draft: k, acceptance: α) - 1
            }
            step.add(tokens: k, from: s.tokens.count)
            if k > 0 { requests.append((s, k)) }
        }
        guard !requests.isEmpty else { return }
        for (request, draft) in zip(requests, try proposer.propose(requests)) {
            let s = request.sequence
            s.draft = draft.prefix(request.limit)
            guard configuration.adaptive, !s.draft.branches.isEmpty else { continue }
            // Branches cost tokens in this step; each keeps the length that pays, if any.
            let α = s.acceptance.rate, β = s.branchAcceptance.rate
            s.draft.branches = s.draft.branches.compactMap { branch in
                let length = policy.branchLength(after: branch.after, chain: s.draft.tokens.count, available: branch.tokens.count,
                                                 acceptance: α, branchAcceptance: β, context: s.tokens.count, step: step)
                guard length > 0 else { return nil }
                step.add(tokens: length, from: s.tokens.count + branch.after)
                return Draft.Branch(after: branch.after, tokens: Array(branch.tokens.prefix(length)))
            }
        }
    }

    func release(_ s: Sequence) { proposer.release(s) }
}
