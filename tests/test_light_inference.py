"""`ponder.inference` stays light: it imports with the training stack unavailable."""

import subprocess
import sys

BLOCK_TRAINING_STACK = """
import sys
for name in ("trl", "peft", "deepspeed", "accelerate", "datasets"):
    sys.modules[name] = None  # what an environment without them looks like to `import` and `find_spec`
try:
    import peft  # noqa: F401
    raise SystemExit("the blocker let peft through")
except ImportError:
    pass
import ponder.inference, ponder.inference.generation, ponder.inference.metrics, ponder.inference.step_format
from ponder.inference.search import beam_search, best_of_n, dvts, lookahead_search
from ponder.inference.compute_optimal import ComputeOptimalSolver, load_solver
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import OracleVerifier, load_verifier
task = get_task("arith")
problem = task.generate(1, 3, seed=0)[0]
assert task.grade(task.reference_solution(problem), problem["answer"])
steps = task.split_steps(task.reference_solution(problem))
assert OracleVerifier(task).score([problem["problem"]], [steps])[0].step_scores == [1.0] * len(steps)
print("ok")
"""


def test_inference_imports_without_the_training_stack():
    result = subprocess.run([sys.executable, "-c", BLOCK_TRAINING_STACK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
