"""The ROIR benchmark (the paper's Table 1): how well does each method's edit of a face region stay in it?

- :mod:`panda.roir.metric`: ROIR of an edit, per image and as a torchmetrics ``Metric``.
- :mod:`panda.uses.landmarks`: the regions of interest (eyes, nose, mouth) from dlib's face landmarks.
- :mod:`panda.roir.protocol`: PandA's editor, the choice of each method's direction on calibration
  faces, its measurement on test faces, and the table (``python evaluate.py task=roir``).
- :mod:`panda.roir.baselines`: GANSpace, SeFa, LowRankGAN, ReSeFa and StyleSpace.
- :mod:`panda.roir.callbacks`: PandA's ROIR during training (``python train.py callbacks=roir``).

Training does not import this package unless ``callbacks=roir`` asks for the monitor, or the parts are
named when training ends (``naming.after_training``: :mod:`panda.uses.face_regions` loads :mod:`panda.uses.landmarks`).
"""
