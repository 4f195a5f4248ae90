"""Files -> records: dataset readers, robust image I/O, splits, synthetic data (torch datasets: ``histobreast.datasets``)."""

from histobreast.data.records import ImageRecord, read_records_csv, write_records_csv

__all__ = ["ImageRecord", "read_records_csv", "write_records_csv"]
