"""Creates a blob container in an Azure Storage account (the tests' azurite), and
prints a container SAS token when asked: the two calls object_store cannot make.

  azure_container.py create BLOB_ENDPOINT CONTAINER   (account and key from the environment)
  azure_container.py sas BLOB_ENDPOINT CONTAINER      (prints a read-write-list SAS, 1 h)

The account and its key come from AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY,
never from the command line. Runs in flytekit's venv, which has azure-storage-blob (adlfs).
"""
import datetime
import os
import sys

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas


def main(command, endpoint, container):
    account = os.environ["AZURE_STORAGE_ACCOUNT_NAME"]
    key = os.environ["AZURE_STORAGE_ACCOUNT_KEY"]
    if command == "create":
        client = BlobServiceClient(account_url=endpoint, credential={"account_name": account, "account_key": key})
        client.create_container(container)
    elif command == "sas":
        print(
            generate_container_sas(
                account,
                container,
                account_key=key,
                permission=ContainerSasPermissions(read=True, write=True, list=True, create=True, add=True),
                expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
            )
        )
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
