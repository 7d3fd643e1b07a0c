"""The ROIR benchmark (the paper's Table 1): how well does each method's edit of a face region stay in it?

- :mod:`panda.roir.benchmark`: the one entry, :func:`~panda.roir.benchmark.benchmark` (``python evaluate.py
  task=roir`` and ``python train.py callbacks=roir_final`` both run it), and its settings
  (:mod:`panda.roir.settings`, conf/roir/default.yaml).
- :mod:`panda.roir.faces`: the calibration and test faces; :mod:`panda.roir.search`: the choice of each method's
  direction on calibration faces; :mod:`panda.roir.measure`: its measurement on test faces;
  :mod:`panda.roir.report`: the rows, the table, the files and figures.
- :mod:`panda.roir.editors`: the methods (PandA and the baselines), each declaring what it needs.
- :mod:`panda.roir.metric`: ROIR of an edit, per image and as a torchmetrics ``Metric``.
- :mod:`panda.roir.baselines`: GANSpace, SeFa, LowRankGAN, ReSeFa and StyleSpace.
- :mod:`panda.roir.callbacks`: ROIR during training (``callbacks=roir``) and once it has ended
  (``callbacks=roir_final``).
- :mod:`panda.uses.landmarks`: the regions of interest (eyes, nose, mouth) from dlib's face landmarks.

Training does not import this package unless a ROIR callback asks for it, or the parts are named when training
ends (``naming.after_training``: :mod:`panda.uses.face_regions` loads :mod:`panda.uses.landmarks`).
"""
