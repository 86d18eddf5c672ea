"""privateai_fedavg: the Private AI course's FedAvg as a Flower App."""
