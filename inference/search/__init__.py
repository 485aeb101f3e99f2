"""PRM-guided search, batched across problems: best-of-N, beam, lookahead and DVTS.

Every search takes problem rows ``{id, problem, answer, level?}`` and a `SearchSetup` (generator,
verifier, task, sampling) and returns one result row per problem (and budget/selection for
best-of-N): ``{id, strategy, budget, n, answer, correct, generated_tokens, verifier_tokens,
verifier_calls, level?}``. `budget` counts generations (Snell et al.): N for best-of-N, beam and
DVTS, N·(k+1) for lookahead.
"""

from ponder.inference.search.beam import beam_search
from ponder.inference.search.best_of_n import best_of_n
from ponder.inference.search.common import SearchSetup
from ponder.inference.search.dvts import dvts
from ponder.inference.search.lookahead import lookahead_search
from ponder.inference.search.selection import SELECTIONS, select_answer

__all__ = ["SELECTIONS", "SearchSetup", "beam_search", "best_of_n", "dvts", "lookahead_search", "select_answer"]
