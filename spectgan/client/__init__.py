"""Client of the spectgan server (a MONAI Label app), by job: ``http`` (``SpectGANClient``: requests, retries,
typed errors, the multipart answer), ``batch`` (conditions x seeds over one reference: ``GenerationJob``),
``result_files`` (a NIfTI per scan, stats.csv, stats.json), ``overview`` (overview.png) and ``cli`` (``spectgan
generate``); the export of results to a PACS is ``spectgan.export.scans``. The CLI and the 3D Slicer module use it;
this package exports the names they use.

    client = SpectGANClient("http://127.0.0.1:8000")
    image_id = client.upload("my_scan.nii.gz")  # or an image id already in the server's datastore
    result = client.generate(image_id, "spect_fastgan_A", "BG", "unilateral", side="left", seed=3)
    result.image, result.stats.ai, result.midline  # SimpleITK image in the reference's LPS space
    result.condition.lesions  # a model with defect axes: the territory and severity it drew (or was given)

``result`` is a ``spectgan.results.GenerationResult``, the type the server built.
"""
from spectgan.client.batch import (GenerationJob, expand_conditions, lesion_params, parse_seeds, removal_lesions,
                                   seeds_from_spinboxes)
from spectgan.client.http import (ClientError, InvalidResponseError, RequestRejectedError, ServerTimeoutError,
                                  ServerUnavailableError, SpectGANClient, model_axes, model_conditions,
                                  parse_multipart)
from spectgan.client.overview import draw_overview
from spectgan.client.result_files import DICOM_DIR, result_file, result_row, save_result, stats_table, write_stats
from spectgan.export.scans import export_results, send_to_pacs, write_dicom
from spectgan.results import GenerationResult

__all__ = ["ClientError", "DICOM_DIR", "GenerationJob", "GenerationResult", "InvalidResponseError",
           "RequestRejectedError", "ServerTimeoutError", "ServerUnavailableError", "SpectGANClient", "draw_overview",
           "expand_conditions", "export_results", "lesion_params", "model_axes", "model_conditions",
           "parse_multipart", "parse_seeds", "removal_lesions", "result_file", "result_row", "save_result",
           "seeds_from_spinboxes", "send_to_pacs", "stats_table", "write_dicom", "write_stats"]
