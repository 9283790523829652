"""Recording and training data (ROS-free core).

- `sync`: approximate-time synchronisation of the sensor streams and IMU windows
- `derive`: surface normals, Canny edges and the other derived modalities
- `pipeline`: sync -> decode -> derive -> store, the one path shared by the recorder node,
  bag ingest and the simulator export
- `store`: the crash-safe, append-only dataset store (format documented there)
- `loader`: the PyTorch `StoreDataset`
- `bagio`: rosbag2 (MCAP / sqlite3) reading and writing with `rosbags`
- `ingest`, `replay`, `from_sim`: bag ingest, bag replay timing, simulator -> store
"""
