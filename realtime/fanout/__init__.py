"""The node and its fan-out: the one per-process object that runs the realtime machinery.

``node.Node`` owns the hub (``hub``: one Redis pub/sub connection per process), the control
plane (``control``), session-start batching (``batching``) and the periodic jobs
(``housekeeping``), with an explicit start and stop (``lifecycle``).
"""
