-- The MLflow server's own database beside the Optuna study's (docker-compose runs this once on first start).
CREATE DATABASE mlflow OWNER videosweep;
