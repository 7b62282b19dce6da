"""Classification: ResNets, RevNets and i-RevNets on digits, CIFAR and ImageNet, their top-1
error, and the CIFAR and ImageNet tables
(:class:`~benchmarks.tasks.classification.task.ClassificationTask`).
"""
