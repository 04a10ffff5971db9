-- One server, one database per owner: Airflow (created by POSTGRES_DB), MLflow, Feast's
-- registry and the experiment store.
CREATE DATABASE mlflow OWNER followrec;
CREATE DATABASE feast OWNER followrec;
CREATE DATABASE experiments OWNER followrec;
