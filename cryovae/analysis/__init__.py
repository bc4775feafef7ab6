"""cryovae.analysis: latent-space embeddings, clustering, traversals, scores against simulated
truth, plots and the analysis report.

Re-exported here is what other layers (workflows, napari) use that needs no plotting library;
plots and the report are imported from their modules (matplotlib loads only then).
"""

from cryovae.analysis.class_averages import ClassAverages, class_averages, run_classes
from cryovae.analysis.clustering import METHODS, Clusters, cluster, kmeans, split_by_cluster
from cryovae.analysis.embedding import PCA, LatentView, fit_pca, latent_view
from cryovae.analysis.traverse import Traversal, decode_frames, dims_traversal, pc_traversal

__all__ = ["METHODS", "PCA", "ClassAverages", "Clusters", "class_averages", "run_classes", "LatentView", "Traversal", "cluster", "decode_frames", "dims_traversal",
           "fit_pca", "kmeans", "latent_view", "pc_traversal", "split_by_cluster"]
