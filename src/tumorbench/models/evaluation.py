"""Evaluate a variant's best checkpoint on the validation split."""

from __future__ import annotations

import csv
import io

import numpy as np
import torch

from tumorbench.core.fileio import atomic_write_json, atomic_write_text, md5_file
from tumorbench.core.variants import Variant, input_hashes, train_params_hash
from tumorbench.data.prepared import load_split_data
from tumorbench.models.calibration import calibration_metrics
from tumorbench.models.inference import load_checkpoint, predict, trained_model
from tumorbench.models.metrics import batch_mean_metrics, dataset_metrics, roc_auc_per_class, roc_points
from tumorbench.models.runtime import configure_runtime, pick_device, resolved_precision


def predictions_csv(ids: list[str], labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["sample_id", "label", "pred", "actual", "predicted"] + [f"prob_{k}" for k in range(probs.shape[1])]
    )
    preds = probs.argmax(1)
    for sample_id, label, pred, row in zip(ids, labels, preds, probs):
        writer.writerow(
            [sample_id, int(label), int(pred), class_names[label], class_names[pred]] + [f"{p:.6g}" for p in row]
        )
    return out.getvalue()


def roc_csvs(rows: list[dict]) -> dict[str, str]:
    """One CSV text per class (binary: the positive class) from metrics.roc_points rows."""
    out: dict[str, list[str]] = {}
    for row in rows:
        lines = out.setdefault(row["class"], ["fpr,tpr,threshold"])
        lines.append(f"{row['fpr']:.6g},{row['tpr']:.6g},{row['threshold']:.6g}")
    return {name: "\n".join(lines) + "\n" for name, lines in out.items()}


def validation_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str], batch_size: int) -> dict:
    """Dataset-level scores, calibration (ece, brier, nll), the per-batch means (batches of
    `batch_size`, in order) and per-class AUCs."""
    preds = probs.argmax(1)
    k = len(class_names)
    metrics = dataset_metrics(labels, preds, probs, k)
    metrics.update(calibration_metrics(labels, probs))
    metrics["batch"] = batch_mean_metrics(labels, preds, probs, batch_size)
    metrics["auc"] = roc_auc_per_class(labels, probs, k, class_names)
    return metrics


def evaluate_variant(variant: Variant, params: dict) -> dict:
    checkpoint = load_checkpoint(variant.checkpoint, variant.stage("train"))
    data = load_split_data(variant.dataset, protocol=variant.protocol)
    precision, normalize = params["train"]["precision"], params["normalize"][variant.init]
    device = pick_device(params["train"]["device"])
    configure_runtime(device)

    model = trained_model(checkpoint, device, precision)
    images = torch.from_numpy(data.val_images).to(device)
    probs = predict(model, images, normalize["mean"], normalize["std"], params["eval"]["batch_size"], precision)
    probs = probs.double().cpu().numpy()
    labels = data.val_labels

    metrics = validation_metrics(labels, probs, data.class_names, params["train"]["batch_size"])
    metrics.update(best_epoch=int(checkpoint["epoch"]), epochs=params["train"]["epochs"], num_val=int(len(labels)))
    metrics["compute"] = {
        "train": checkpoint.get("compute"),
        "evaluate": {"device": device.type, "precision": resolved_precision(precision, device)},
    }
    weights_md5 = checkpoint.get("provenance", {}).get("weights_md5")
    metrics["provenance"] = {
        **input_hashes(variant),
        "checkpoint_md5": md5_file(variant.checkpoint),
        "weights_md5": weights_md5,
        "params_hash": train_params_hash(params, variant.init),
    }

    atomic_write_text(variant.predictions, predictions_csv(data.val_ids, labels, probs, data.class_names))
    roc = roc_points(labels, probs, len(data.class_names), data.class_names)
    for class_name, text in roc_csvs(roc).items():
        atomic_write_text(variant.roc_dir / f"{class_name}.csv", text)
    atomic_write_json(variant.metrics, metrics)  # last: no metrics unless everything else worked
    return metrics
