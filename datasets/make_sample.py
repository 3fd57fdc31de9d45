"""Regenerate the synthetic Criteo-format sample shipped in sparseopt/datasets/data/.

Usage, from the repository root: python datasets/make_sample.py (after pip install -e .,
or with PYTHONPATH=.)

Prints the files' sizes and the Bayes floor (log loss and AUC of the true probabilities).
"""

from sklearn.metrics import log_loss, roc_auc_score

from sparseopt.datasets._sample import DATA_DIR, SAMPLE_FILES, make_sample_files

model, rows = make_sample_files()
print(f"intercept b = {model.intercept:.6f}")
for subset, (_, y, proba) in rows.items():
    path = DATA_DIR / SAMPLE_FILES[subset]
    print(
        f"{path.name}: {len(y)} rows, {path.stat().st_size / 1e6:.2f} MB, "
        f"positives {y.mean():.4f}, Bayes log loss {log_loss(y, proba):.4f}, "
        f"Bayes AUC {roc_auc_score(y, proba):.4f}"
    )
