from django.urls import path

from apps.sharing import views

app_name = "sharing"
urlpatterns = [
    path("", views.sharing_page, name="page"),
    path("offers/save", views.offer_save, name="offer-save"),
    path("offers/stop", views.offer_stop, name="offer-stop"),
    path("friends/save", views.share_save, name="share-save"),
    path("friends/stop", views.share_stop, name="share-stop"),
    path("listing/save", views.listing_save, name="listing-save"),
    path("listing/announce", views.announce, name="announce"),
    path("listing/withdraw", views.withdraw, name="withdraw"),
]
