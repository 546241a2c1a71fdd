"""ECM (efficient control for scale-based autoregressive image models): control modules for the digits-control VAR."""

from loragen.generators.ecm.config import ECMConfig
from loragen.generators.ecm.trained_control import TrainedControl, load_control, train_control

__all__ = ["ECMConfig", "TrainedControl", "load_control", "train_control"]
