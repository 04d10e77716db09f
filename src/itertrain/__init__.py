"""itertrain: iterative training with hand-picked mini-batches for imbalanced binary data.

The public API::

    import itertrain as it

    pairs = it.load_pairs("pairs.tsv", seq_a_col="gene", seq_b_col="miRNA")
    result = it.train(pairs, it.TrainConfig(max_iter=10), "run")
    scores = it.predict_scores(result.model, it.load_pairs("test.tsv", label_col=None))
"""

from itertrain._version import __version__
from itertrain.baselines import seed_match_scores
from itertrain.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from itertrain.compare import load_comparison, run_comparison
from itertrain.config import TrainConfig, load_config
from itertrain.encoding import (ENCODINGS, decode_sequences, encode_pairs, encode_sequences, pair_features_torch,
                                pair_matrices)
from itertrain.errors import UserError
from itertrain.evaluation import (average_precision, precision_recall_curve, roc_auc, roc_curve, score_metrics,
                                  threshold_metrics)
from itertrain.io import PairTable, load_pairs, read_table, write_table
from itertrain.models import MODELS, build_model, register_model
from itertrain.predict import predict_scores, resolve_checkpoint
from itertrain.sampling import HandPickedBatchSampler, Phase, ratio_schedule
from itertrain.synthetic import make_synthetic
from itertrain.training import TrainResult, train

__all__ = [
    "__version__",
    "seed_match_scores",
    "load_comparison", "run_comparison",
    "Checkpoint", "load_checkpoint", "save_checkpoint",
    "TrainConfig", "load_config",
    "ENCODINGS", "encode_pairs", "encode_sequences", "pair_matrices", "pair_features_torch", "decode_sequences",
    "UserError",
    "average_precision", "roc_auc", "precision_recall_curve", "roc_curve", "score_metrics", "threshold_metrics",
    "PairTable", "load_pairs", "read_table", "write_table",
    "MODELS", "build_model", "register_model",
    "predict_scores", "resolve_checkpoint",
    "HandPickedBatchSampler", "Phase", "ratio_schedule",
    "make_synthetic",
    "TrainResult", "train",
]
